"""The import rules of ``src/pruneformer``, checked on the source with ``ast`` (nothing is imported or run).

* every folder is one layer (:data:`LAYERS`, bottom first) and every import points down: a module imports
  modules of its own folder or of a lower layer, never of a higher one nor of another folder on its own
  layer (``methods/``, what to keep, and ``compress/``, how to cut, share a layer: what both need lives
  below them, in ``core/structure.py``);
* no import cycle among pruneformer's modules (every import counts: top-level, inside functions and under
  ``TYPE_CHECKING``);
* a method never builds a file format: no method imports a module that writes files (SPP's path record is
  its own file format, read and written beside the search, never by it);
* no module imports another module's private name (``from .x import _y``);
* no source file is over :data:`MAX_LINES` lines.

The checker itself is tested on small made-up packages first, so a rule cannot pass by checking nothing.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "pruneformer"
MAX_LINES = 400
#: Modules that write file formats (saved models, path records, checkpoints): never imported by a method.
FILE_FORMAT_MODULES = ("pruneformer.models.saved", "pruneformer.methods.spp.record", "pruneformer.train.checkpoint")
#: The layers, bottom first; each entry is the folders (or top-level modules) on that layer.
LAYERS: list[tuple[str, ...]] = [
    ("errors", "version"),
    ("families",),
    ("core", "data"),
    ("methods", "compress"),
    ("models",),
    ("train",),
    ("deploy",),
    ("runs",),
    ("compare",),
    ("cli",),
]


# -- the checker -----------------------------------------------------------------------------------------
def read_package(root: Path, package: str) -> dict[str, tuple[str, bool]]:
    """``{module name: (source, is_package)}`` for every ``.py`` file of ``package`` under ``root``."""
    modules = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts.pop()
        modules[".".join(parts)] = (path.read_text(encoding="utf-8"), is_package)
    return modules


def imports(module: str, source: str, is_package: bool, known: set[str]) -> list[tuple[str, str, int]]:
    """``(imported module, imported name or "", line)`` for every import of a module in ``known``.

    ``from a import b`` counts as importing module ``a.b`` when that is a module, else name ``b`` of ``a``.
    """
    here = module if is_package else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(alias.name, "", node.lineno) for alias in node.names if alias.name in known]
        elif isinstance(node, ast.ImportFrom):
            base = here
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            target = ".".join(p for p in (base if node.level else "", node.module or "") if p)
            for alias in node.names:
                submodule = f"{target}.{alias.name}"
                if submodule in known:
                    found.append((submodule, "", node.lineno))
                elif target in known:
                    found.append((target, alias.name, node.lineno))
    return found


def graph(modules: dict[str, tuple[str, bool]]) -> dict[str, list[tuple[str, str, int]]]:
    known = set(modules)
    return {name: imports(name, source, is_pkg, known) for name, (source, is_pkg) in modules.items()}


def with_packages(edges: dict[str, list[tuple[str, str, int]]]) -> dict[str, list[tuple[str, str, int]]]:
    """The edges plus the packages Python runs first: importing ``a.b.c`` runs ``a/b/__init__`` (unless the
    importer is itself inside ``a.b``, which is then running already)."""
    full = {}
    for module, found in edges.items():
        full[module] = list(found)
        for target, _, line in found:
            parent = target.rpartition(".")[0]
            while parent and not in_package(module, parent):
                full[module].append((parent, "", line))
                parent = parent.rpartition(".")[0]
    return full


def find_cycle(edges: dict[str, list[tuple[str, str, int]]]) -> list[str] | None:
    """One import cycle as ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in dict.fromkeys(t for t, _, _ in edges.get(node, [])):
            if target == node:
                continue
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(edges):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def in_package(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def crossings(edges, source: str, forbidden: tuple[str, ...]) -> list[str]:
    """Imports from modules inside ``source`` of modules inside any of ``forbidden``."""
    return [f"{module}:{line} imports {target}" for module, found in edges.items() if in_package(module, source)
            for target, _, line in found if any(in_package(target, f) for f in forbidden)]


def layer_of(module: str, package: str, layers: list[tuple[str, ...]]) -> tuple[int, str] | None:
    """(layer index, folder) of a module, or None for the package's own ``__init__`` (the public API, which
    may gather names from every layer)."""
    parts = module.split(".")
    if len(parts) == 1:
        return None
    for index, folders in enumerate(layers):
        if parts[1] in folders:
            return index, parts[1]
    raise AssertionError(f"{module} is in no layer: add its folder to LAYERS")


def upward_imports(edges, package: str, layers: list[tuple[str, ...]]) -> list[str]:
    """Imports of a higher layer, or of another folder on the importer's own layer."""
    found = []
    for module, targets in edges.items():
        here = layer_of(module, package, layers)
        for target, _, line in targets:
            there = layer_of(target, package, layers)
            if here is None or there is None or there[1] == here[1]:
                continue
            if there[0] >= here[0]:
                found.append(f"{module}:{line} imports {target} (layer {there[1]} is not below {here[1]})")
    return found


def private_imports(edges) -> list[str]:
    """``from x import _y`` across modules (dunder names such as ``__version__`` are public)."""
    return [f"{module}:{line} imports {name} from {target}" for module, found in edges.items()
            for target, name, line in found
            if name.startswith("_") and not (name.startswith("__") and name.endswith("__"))]


def long_files(root: Path, package: str, limit: int) -> list[str]:
    return [f"{path.relative_to(root)}: {n} lines" for path in sorted((root / package).rglob("*.py"))
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > limit]


# -- the checker on made-up packages ---------------------------------------------------------------------
def fake(**sources: str) -> dict[str, tuple[str, bool]]:
    """``fake(p="", p__a="from . import b")``: module names with ``__`` for dots; a name with modules below
    it is a package."""
    names = {name.replace("__", "."): source for name, source in sources.items()}
    return {name: (source, any(other.startswith(name + ".") for other in names)) for name, source in names.items()}


def test_checker_finds_a_cycle_through_relative_and_lazy_imports():
    edges = graph(fake(p="", p__a="from .b import x", p__b="def f():\n    from .sub.c import y",
                       p__sub="", p__sub__c="from .. import a"))
    assert find_cycle(edges) == ["p.a", "p.b", "p.sub.c", "p.a"]
    assert find_cycle(graph(fake(p="", p__a="from .b import x", p__b="import os"))) is None


def test_checker_finds_a_cycle_through_a_package_init():
    # p.a imports a module of p.sub, which runs p/sub/__init__ first, which imports p.a
    edges = graph(fake(p="", p__a="from .sub.c import x", p__sub="from .. import a", p__sub__c=""))
    assert find_cycle(edges) is None
    assert find_cycle(with_packages(edges)) == ["p.a", "p.sub", "p.a"]


def test_checker_finds_upward_and_sideways_imports():
    layers = [("base",), ("low", "side"), ("high",)]
    edges = graph(fake(p="from .high.h import x", p__base="", p__low="", p__low__a="from ..base import e\nfrom . import b",
                       p__low__b="def f():\n    from ..high.h import y", p__side="", p__side__s="from ..low.a import z",
                       p__high="", p__high__h="from ..low.a import z\nfrom ..side.s import w"))
    assert upward_imports(edges, "p", layers) == ["p.low.b:2 imports p.high.h (layer high is not below low)",
                                                  "p.side.s:1 imports p.low.a (layer low is not below side)"]
    with pytest.raises(AssertionError, match="p.stray is in no layer"):
        upward_imports(graph(fake(p="", p__stray="")), "p", layers)


def test_checker_finds_crossings_and_private_names():
    edges = graph(fake(p="", p__m="", p__m__x="from ..c.y import Plan", p__c="", p__c__y="from ..io import _save, __all__",
                       p__io=""))
    assert crossings(edges, "p.m", ("p.c",)) == ["p.m.x:1 imports p.c.y"]
    assert crossings(edges, "p.c", ("p.m",)) == []
    assert private_imports(edges) == ["p.c.y:1 imports _save from p.io"]


# -- the rules on pruneformer ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def edges():
    modules = read_package(SRC, PACKAGE)
    assert len(modules) > 40 and "pruneformer.core.structure" in modules
    return graph(modules)


def test_no_import_cycle(edges):
    assert find_cycle(with_packages(edges)) is None


def test_every_import_points_down_a_layer(edges):
    assert upward_imports(edges, PACKAGE, LAYERS) == []


def test_methods_and_compress_do_not_import_each_other(edges):
    assert crossings(edges, "pruneformer.methods", ("pruneformer.compress",)) == []
    assert crossings(edges, "pruneformer.compress", ("pruneformer.methods",)) == []


def test_methods_build_no_file_format(edges):
    methods = {m: found for m, found in edges.items() if m.startswith("pruneformer.methods")
               and not m.startswith(("pruneformer.methods.spp.record", "pruneformer.methods.spp.plots"))}
    assert crossings(methods, "pruneformer.methods", FILE_FORMAT_MODULES) == []


def test_no_private_name_imported_from_another_module(edges):
    assert private_imports(edges) == []


def test_no_source_file_over_the_limit():
    assert long_files(SRC, PACKAGE, MAX_LINES) == []
