"""``graphc dump MODEL``: print the compiler's stages (forward and backward graphs for now)."""

from __future__ import annotations

import argparse

from graphc.ir.text import print_graph


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dump", help="print the graphs the compiler makes for MODEL")
    p.add_argument("model", help="path/to/file.py:name (a Model, Graph, Tensor or a function returning one)")
    p.add_argument("--stage", default="all", help="forward | backward | all")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from graphc.compiler import build_graphs
    from graphc.modelspec import resolve

    spec = resolve(args.model)
    if spec.model is not None:
        prog = spec.model.program
    elif spec.graph is not None:
        print(print_graph(spec.graph))
        return 0
    else:
        prog = build_graphs(spec.name, spec.outputs, spec.loss, spec.optimizer)
    if args.stage in ("forward", "all"):
        print(print_graph(prog.forward))
    if args.stage in ("backward", "all") and prog.training is not None:
        print(print_graph(prog.training))
    return 0
