"""The ``graphc`` command line: ``graphc dump MODEL ...`` and ``graphc compile MODEL -o lib.so``."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable

from graphc.ir.errors import GraphcError


def int_in(lo: int, hi: int | None = None) -> Callable[[str], int]:
    """An argparse ``type``: an int in ``[lo, hi)`` (no upper bound when ``hi`` is None); any
    other text is argparse's usage error (exit code 2), never a traceback further on."""

    def parse(text: str) -> int:
        try:
            v = int(text, 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an int, got {text!r}") from None
        if v < lo or (hi is not None and v >= hi):
            span = f"[{lo}, {hi})" if hi is not None else f">= {lo}"
            raise argparse.ArgumentTypeError(f"{v} is out of range: expected an int {span}")
        return v

    parse.__name__ = "int"  # argparse names the type in its messages
    return parse


def positive_float(text: str) -> float:
    """An argparse ``type``: a finite float > 0."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (math.isfinite(v) and v > 0):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return v


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="graphc",
        description="graphc: an ahead-of-time neural-network compiler",
        allow_abbrev=False,
    )
    from graphc import __version__

    p.add_argument("--version", action="version", version=f"graphc {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    from graphc import cache as cache_cmd
    from graphc import dump as dump_cmd

    dump_cmd.add_parser(sub)
    cache_cmd.add_parser(sub)
    try:
        from graphc import export as export_cmd

        export_cmd.add_parser(sub)
        export_cmd.add_targets_parser(sub)
    except ImportError:
        pass
    # No abbreviations: `--target aarch64-linux-gnu` must never be read as another option
    # that merely starts with the same letters (it once became --target-cpu).
    p.allow_abbrev = False
    for sp in sub.choices.values():
        sp.allow_abbrev = False
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except GraphcError as e:
        print(f"graphc: error: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `graphc targets --cpus ... | head`: the reader has enough
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no flush error at exit
        return 1


if __name__ == "__main__":
    sys.exit(main())
