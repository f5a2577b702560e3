"""The core's shape: layers that import only downwards, no circle, and a cheap public face.

Every import counts, those inside functions too (a lazy import is still a dependency).
"""

from __future__ import annotations

import ast
from pathlib import Path

import quantcore

ROOT = Path(quantcore.__file__).parent

# Lowest first; a module may import from its own layer or any below it.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("quantcore.errors",),
    ("quantcore.checks", "quantcore.blas_threads", "quantcore.extensions"),
    ("quantcore.spec", "quantcore.spec_defaults", "quantcore.spec_names", "quantcore.target",
     "quantcore.progress",
     "quantcore.limits"),
    ("quantcore.jit", "quantcore.jit_cache", "quantcore.jit_runtime", "quantcore.jit_stamp"),
    ("quantcore.design", "quantcore.quantizers", "quantcore.coding"),
    ("quantcore.formats",),
    ("quantcore.compress",),
    ("quantcore.evaluate",),
    ("quantcore.report",),
    ("quantcore.explore",),
    ("quantcore.jobs",),
)


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """The quantcore modules that ``path`` imports (``from quantcore.x import y`` names
    ``quantcore.x.y`` when that is a module of its own)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("quantcore")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if not node.module.startswith("quantcore"):
                continue
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in MODULES else node.module)
    return found


MODULES = {_module_name(p): p for p in ROOT.rglob("*.py")}


def _layer(module: str) -> int:
    for rank, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return rank
    raise AssertionError(f"{module} belongs to no layer: add it to LAYERS")


def test_every_module_imports_only_its_layer_or_below() -> None:
    upward = [
        f"{module} (layer {_layer(module)}) imports {target} (layer {_layer(target)})"
        for module, path in MODULES.items()
        if module != "quantcore"
        for target in _imports(path)
        if target != "quantcore" and _layer(target) > _layer(module)
    ]
    assert not upward, "\n".join(upward)


def test_no_import_circle_between_modules() -> None:
    graph = {m: {t for t in _imports(p) if t in MODULES and t != m} for m, p in MODULES.items()}
    graph["quantcore"] = set()  # the public face is the top: nothing inside imports it back
    state: dict[str, int] = {}  # 1 on the current path, 2 done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = [*path[path.index(nxt):], nxt]
                raise AssertionError("import circle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_no_module_imports_the_public_face() -> None:
    """Inside the core, names come from where they are defined, never from ``quantcore``."""
    offenders = [m for m, p in MODULES.items() if m != "quantcore" and "quantcore" in _imports(p)]
    assert not offenders


def test_layout_has_no_file_over_400_lines() -> None:
    long = {m: n for m, p in MODULES.items() if (n := len(p.read_text().splitlines())) > 400}
    assert not long
