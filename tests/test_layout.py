"""The package's plan: each folder imports only the layers below it, with no cycle between modules.

Every import counts, including those inside functions (which would otherwise hide a cycle).
"""

from __future__ import annotations

import ast
from pathlib import Path

import maelab

ROOT = Path(maelab.__file__).parent

# Lower layers first; a module may import its own folder and any layer with a smaller number.
LAYERS = {
    "options": 0,
    "data": 1, "pos_embed": 1, "masking": 1,
    "targets": 2,
    "models": 3, "checkpoint": 3,
    "interop": 4,
    "train": 5,
    "visualize": 6,
    "evaluate": 7,
    "pretrain": 8, "finetune": 8, "anomaly": 8,
    "ablate": 9, "bench": 9, "demo": 9,
    "cli": 10,
    "__main__": 11, "__init__": 11,
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" and len(parts) > 1 else parts)


def imported_modules(path: Path) -> set[str]:
    """Every maelab module ``path`` imports, anywhere in the file (``from maelab.x import y`` counts
    ``maelab.x.y`` when that is a module, else ``maelab.x``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("maelab")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("maelab"):
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                as_path = ROOT.parent / Path(*full.split("."))
                found.add(full if as_path.with_suffix(".py").exists() or as_path.is_dir() else node.module)
    return found


def layer_of(module: str) -> tuple[str, int]:
    top = module.split(".")[1] if "." in module else "__init__"
    assert top in LAYERS, f"{module}: add its folder to LAYERS in this test (and to docs/design.md)"
    return top, LAYERS[top]


def package_modules() -> dict[str, set[str]]:
    return {module_name(path): imported_modules(path) for path in ROOT.rglob("*.py")}


def test_every_import_points_down_the_layers():
    upward = []
    for module, imports in package_modules().items():
        folder, level = layer_of(module)
        for target in imports:
            if target == "maelab":
                continue
            other, other_level = layer_of(target)
            if other != folder and other_level >= level:
                upward.append(f"{module} -> {target}")
    assert not upward, "imports that run up or sideways:\n" + "\n".join(sorted(upward))


def test_no_import_cycle_between_modules():
    graph = package_modules()
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if nxt not in graph:
                continue
            assert state.get(nxt) != 1, "import cycle: " + " -> ".join([*path, node, nxt])
            if nxt not in state:
                visit(nxt, [*path, node])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [])


def test_the_layer_check_sees_imports_inside_functions(tmp_path):
    source = tmp_path / "probe.py"
    source.write_text("def f():\n    from maelab.evaluate.knn import run_knn\n    import maelab.train.loop\n")
    assert imported_modules(source) == {"maelab.evaluate.knn", "maelab.train.loop"}


def test_no_source_file_over_400_lines():
    long = {str(p.relative_to(ROOT)): n for p in ROOT.rglob("*.py") if (n := len(p.read_text().splitlines())) > 400}
    assert not long, f"files over 400 lines (one idea per file): {long}"
