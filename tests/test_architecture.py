"""The package's shape: layers that depend one way, no import cycles, no hidden imports.

Every import statement of every module is read from the source (those inside functions too, which
is where cycles hide). A module may import its own layer and the layers below it, never one above.
Imports inside functions are allowed only for the heavy optional dependencies listed below, so that
`import percept.X` stays light and works without them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "percept"

# Lowest first. The root package holds only the version and lazy re-exports.
LAYERS = [
    ("percept", "percept.errors"),
    ("percept.core",),
    ("percept.models",),
    ("percept.hub",),
    ("percept.codecs",),
    ("percept.metrics",),
    ("percept.enhancer",),
    ("percept.fusion",),
    ("percept.eval",),
    ("percept.training",),
    ("percept.cli",),
]

# Imported inside functions only: heavy, optional, or slow to import, and needed by few calls.
LAZY_ALLOWED = {
    "bm3d",
    "compressai",
    "diffusers",
    "huggingface_hub",
    "jupyter_client",
    "lpips",
    "matplotlib",
    "nbformat",
    "papermill",
    "pytorch_fid",
    "pytorch_msssim",
    "skimage",
    "ssimulacra2",
    "torchvision",
    "yaml",
}
# The CLI's dispatcher imports only the chosen subcommand's module (start-up time of `percept`).
LAZY_ALLOWED_IN = {"percept.cli": {"percept"}}


def _modules() -> dict[str, Path]:
    mods = {}
    for path in SRC.rglob("*.py"):
        parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = path
    return mods


MODULES = _modules()


def _owner(name: str) -> str:
    """The module an imported name lives in (`percept.codecs.get_codec` -> `percept.codecs`)."""
    while name not in MODULES and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def _imports(module: str) -> list[tuple[str, bool, int]]:
    """(imported name, inside a function, line) for every import statement of `module`."""
    path = MODULES[module]
    tree = ast.parse(path.read_text())
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    inner = {
        id(sub)
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        for sub in ast.walk(node)
        if isinstance(sub, (ast.Import, ast.ImportFrom))
    }
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            names = [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        found += [(n, id(node) in inner, node.lineno) for n in names]
    return found


def _layer(module: str) -> int:
    for i, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes if p != "percept"):
            return i
    if module == "percept":
        return 0
    raise AssertionError(f"{module} is in no layer: add its package to LAYERS")


def _graph() -> dict[str, set[str]]:
    graph = {}
    for module in MODULES:
        graph[module] = {
            _owner(n) for n, _, _ in _imports(module) if n.split(".")[0] == "percept"
        } - {module}
    return graph


def test_every_module_is_in_a_layer():
    for module in MODULES:
        _layer(module)


def test_one_module_at_the_top():
    top = [m for m, p in MODULES.items() if m.count(".") == 1 and p.name != "__init__.py"]
    assert top == ["percept.errors"]


def test_imports_go_down_the_layers():
    upward = [
        f"{m} ({_layer(m)}) imports {n} ({_layer(_owner(n))}) at line {line}"
        for m in MODULES
        for n, _, line in _imports(m)
        if n.split(".")[0] == "percept" and _layer(_owner(n)) > _layer(m)
    ]
    assert not upward, "\n".join(upward)


def test_no_import_cycles():
    graph = _graph()
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    assert not cycles, cycles


def test_imports_inside_functions_only_for_heavy_optional_packages():
    hidden = [
        f"{m}:{line} imports {n} inside a function"
        for m in MODULES
        for n, inside, line in _imports(m)
        if inside
        and n.split(".")[0] not in LAZY_ALLOWED
        and not any(
            m == owner or m.startswith(owner + ".")
            for owner, allowed in LAZY_ALLOWED_IN.items()
            if n.split(".")[0] in allowed
        )
    ]
    assert not hidden, f"{len(hidden)} hidden imports:\n" + "\n".join(hidden)


@pytest.mark.parametrize("module", ["percept.core.samplers", "percept.enhancer", "percept.codecs"])
def test_a_layer_does_not_pull_in_the_layers_above(module):
    """What importing a module reaches: a sampler needs no codec, the enhancer no training."""
    graph, seen, todo = _graph(), set(), [module]
    while todo:
        for w in graph[todo.pop()]:
            if w not in seen:
                seen.add(w)
                todo.append(w)
    assert all(_layer(w) <= _layer(module) for w in seen), sorted(
        w for w in seen if _layer(w) > _layer(module)
    )
