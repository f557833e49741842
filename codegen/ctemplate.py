"""Filling the fixed C of codegen/templates/ with a model's parts.

A template is C as it stands (a test compiles it alone), so its placeholders are C tokens:

- ``GCKEY`` (``GC`` then capitals and digits, e.g. ``GCNAME``, ``GCPARAMBYTES``): replaced by
  ``values["KEY"]`` wherever it stands, in code, strings and comments alike.
- a line ``//@ key`` (a C99 comment, also inside a block comment; ``key`` in lower case and
  underscores): a slot, replaced by the lines ``slots["key"]``, copied as they are (no
  placeholders are read in them).
- ``//@ if key`` / ``//@ if not key`` ... ``//@ else`` ... ``//@ end``: the lines between are
  kept only when ``flags["key"]`` is (or is not) true; these nest.
- any other ``//@`` line is a note on the template, never copied.

Every placeholder, flag and slot the template names must be given, and every one given must
be used: a mismatch is a CodegenError naming it (a template and its generator out of step).
"""

from __future__ import annotations

import pathlib
import re
from collections.abc import Mapping, Sequence

from graphc.ir.errors import CodegenError

TEMPLATES = pathlib.Path(__file__).parent / "templates"
PLACEHOLDER = re.compile(r"GC([A-Z0-9]+)")
# //@ if KEY, //@ if not KEY, //@ else, //@ end, //@ KEY (a slot); other //@ lines are notes
DIRECTIVE = re.compile(r"\s*//@ (?:(if) (not )?([a-z_]+)|(else|end)|([a-z_]+))$")


def template_text(name: str) -> str:
    """The text of ``codegen/templates/NAME``."""
    return (TEMPLATES / name).read_text()


def fill(
    name: str,
    values: Mapping[str, object],
    flags: Mapping[str, bool],
    slots: Mapping[str, Sequence[str]],
) -> list[str]:
    """The lines of template ``name`` filled in (rules in this module's docstring).

    Raises:
        CodegenError: the template names a placeholder, flag or slot that is not given, one
            given is never named, or its ``if``/``else``/``end`` lines do not pair up.
    """
    lines = template_text(name).splitlines()
    _check_names(name, lines, values, flags, slots)
    out: list[str] = []
    keep = [True]  # the outer level, then one entry per open `if`: whether its lines are kept
    for line in lines:
        m = DIRECTIVE.match(line)
        if m is not None and (m[1] or m[4]):
            _branch(name, keep, m, flags)
        elif m is not None:
            out += slots[m[5]] if all(keep) else []
        elif all(keep) and not line.lstrip().startswith("//@"):
            out.append(PLACEHOLDER.sub(lambda p: str(values[p[1]]), line))
    if len(keep) != 1:
        raise CodegenError(f"template {name}: an `//@ if` has no `//@ end`")
    return out


def _branch(name: str, keep: list[bool], m: re.Match, flags: Mapping[str, bool]) -> None:
    """Open, turn or close an ``//@ if`` on the stack ``keep``."""
    if m[1]:
        keep.append(bool(flags[m[3]]) != bool(m[2]))
    elif len(keep) == 1:
        raise CodegenError(f"template {name}: `//@ {m[4]}` without its `//@ if`")
    elif m[4] == "else":
        keep[-1] = not keep[-1]
    else:
        keep.pop()


def _check_names(
    name: str,
    lines: list[str],
    values: Mapping[str, object],
    flags: Mapping[str, bool],
    slots: Mapping[str, Sequence[str]],
) -> None:
    """Every placeholder, flag and slot named in the template is given, and the reverse."""
    named: dict[str, set[str]] = {"placeholder": set(), "flag": set(), "slot": set()}
    for line in lines:
        m = DIRECTIVE.match(line)
        if m is None and not line.lstrip().startswith("//@"):
            named["placeholder"].update(PLACEHOLDER.findall(line))
        elif m is not None and (m[3] or m[5]):
            named["flag" if m[3] else "slot"].add(m[3] or m[5])
    for kind, given in (("placeholder", values), ("flag", flags), ("slot", slots)):
        if named[kind] != set(given):
            missing = sorted(named[kind] - set(given))
            unused = sorted(set(given) - named[kind])
            raise CodegenError(
                f"template {name}: {kind}s named but not given {missing}, given but not named "
                f"{unused}"
            )
