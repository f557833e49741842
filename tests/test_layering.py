"""Layers point down: ``graphc.ir`` imports nothing above it, ``graphc.codegen`` neither the
runtime nor the graphc package, ``graphc.runtime`` not the graphc package. Every import
statement of every module (function-level imports included) is parsed, relative ones resolved."""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
LAYERS = {"ir": "graphc.ir", "codegen": "graphc.codegen", "runtime": "graphc.runtime"}
# what each layer may import from graphc (its own package and the layers below it)
ALLOWED = {
    "graphc.ir": ("graphc.ir",),
    "graphc.codegen": ("graphc.ir", "graphc.codegen"),
    "graphc.runtime": ("graphc.ir", "graphc.codegen", "graphc.runtime"),
}


def module_name(path: pathlib.Path, folder: str) -> str:
    rel = path.relative_to(ROOT / folder).with_suffix("")
    parts = [p for p in rel.parts if p != "__init__"]
    return ".".join([LAYERS[folder], *parts])


def imports_of(path: pathlib.Path, module: str) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in the file."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            # "from graphc import init" imports graphc.init
            out += [(node.lineno, f"{name}.{a.name}") for a in node.names]
    return out


def sources(folder: str) -> list[pathlib.Path]:
    return sorted((ROOT / folder).rglob("*.py"))


@pytest.mark.parametrize("folder", sorted(LAYERS))
def test_layers_import_only_downward(folder: str) -> None:
    allowed = ALLOWED[LAYERS[folder]]
    bad = []
    for path in sources(folder):
        module = module_name(path, folder)
        for line, name in imports_of(path, module):
            if name != "graphc" and not name.startswith("graphc."):
                continue
            if not any(name == a or name.startswith(a + ".") for a in allowed):
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    assert not bad, f"{LAYERS[folder]} imports from a layer above it:\n" + "\n".join(bad)


def test_the_checker_sees_relative_and_function_level_imports(tmp_path: pathlib.Path) -> None:
    """The parser above resolves ``from ..x import y`` and finds imports inside functions."""
    pkg = tmp_path / "runtime"
    pkg.mkdir()
    f = pkg / "m.py"
    f.write_text("def f():\n    from graphc.export import export_model\nfrom ..dsl import x\n")
    names = [n for _, n in imports_of(f, "graphc.runtime.m")]
    assert sorted(names) == ["graphc.dsl.x", "graphc.export.export_model"]
