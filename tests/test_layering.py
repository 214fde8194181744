"""The package's import graph: no circles, and imports only point up the floors of STYLE.md.

Every module under `reslstm_tf/` is parsed (never imported), and every import in it counts,
including those inside functions: a function-local import is still a dependency, only a
deferred one. A module `reslstm_tf.a.b` sits on the floor of `a`; the floors are listed
bottom-up, and a module may import from its own floor or a lower one, never a higher one.
"""

import ast
import pathlib

import pytest

PACKAGE = "reslstm_tf"
PACKAGE_DIR = pathlib.Path(__file__).resolve().parents[1] / PACKAGE

# Bottom-up: data flows down this list and imports point up it (STYLE.md's layout, with the
# end-to-end video classifier beside the head builders and the test helpers last).
FLOORS = (
    "clip_spec",
    "layers",
    "presets",
    "precision",
    "backbones",
    "models",
    "video_classifier",
    "data",
    "extract",
    "runs",
    "training",
    "evaluate",
    "experiments",
    "zoo",
    "predict",
    "streaming",
    "pipelines",
    "export",
    "cli",
    "testing",
)
# Small utilities with no project imports of higher floors, usable from any floor (plots: the
# headless matplotlib and atomic PNG writing that evaluation, prediction and streaming share;
# configs: config dataclasses as flat settings, for flags and config files).
BASE = ("checks", "files", "faults", "assets", "plots", "configs")


def _module_name(path):
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules():
    """Returns {module name: path} of every Python module of the package."""
    return {_module_name(p): p for p in sorted(PACKAGE_DIR.rglob("*.py"))}


def _resolve(name, modules):
    """Returns the module `name` refers to: itself, or its closest enclosing package."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module, path, modules):
    """Returns the set of package modules that `module` imports anywhere in its source."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor if is_package else anchor[:-1]
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # `from pkg import name` imports the submodule pkg.name when there is one.
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                for alias in node.names
            ]
        else:
            continue
        for target in targets:
            if target == PACKAGE or target.startswith(PACKAGE + "."):
                resolved = _resolve(target, modules)
                if resolved and resolved != module:
                    found.add(resolved)
    return found


def _graph():
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _floor(module):
    """Returns the floor index of `module`; None for the package root and base utilities."""
    parts = module.split(".")
    if len(parts) == 1 or parts[1] in BASE:
        return None
    if parts[1] not in FLOORS:
        return -1
    return FLOORS.index(parts[1])


def _cycles(graph):
    """Returns the strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, result = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                result.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return result


GRAPH = _graph()


def test_the_graph_sees_function_local_and_relative_imports():
    assert f"{PACKAGE}.checks" in GRAPH[f"{PACKAGE}.models"]
    # build_extractor imports the backbone's extractor inside a function.
    assert f"{PACKAGE}.backbones.extractor" in GRAPH[f"{PACKAGE}.extract"]
    planted = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(planted) == [["a", "b", "c"]]


def test_every_module_has_a_floor():
    homeless = sorted(m for m in GRAPH if _floor(m) == -1)
    assert not homeless, (
        f"modules {homeless} sit on no floor: move them into one of {FLOORS} or {BASE}, "
        "or add their floor to FLOORS in its place"
    )


def test_no_import_circles():
    assert _cycles(GRAPH) == []


def test_imports_point_up_the_floors_only():
    downward = []
    for module, targets in sorted(GRAPH.items()):
        floor = _floor(module)
        for target in sorted(targets):
            target_floor = _floor(target)
            if floor is None and target_floor is not None:
                downward.append(f"{module} (base) imports {target}")
            elif None not in (floor, target_floor) and target_floor > floor >= 0:
                downward.append(f"{module} ({FLOORS[floor]}) imports {target}")
    assert not downward, "imports from a lower floor to a higher one:\n" + "\n".join(downward)


@pytest.mark.parametrize(
    "module, forbidden",
    [
        ("backbones.i3d", "backbones.convert"),
        ("streaming", "zoo"),
        ("zoo", "predict"),
    ],
)
def test_named_one_way_dependencies(module, forbidden):
    assert f"{PACKAGE}.{forbidden}" not in GRAPH[f"{PACKAGE}.{module}"]
