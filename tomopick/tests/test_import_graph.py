"""The import graph of tomopick, read from the sources (ast): layers and no circles.

Every ``import`` counts, also those inside functions (a deferred import is
still a dependency). ``from a import b`` is an edge to module ``a.b`` when
that is a module of tomopick, else to ``a``.
"""
import ast
import os

import pytest

PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# what tomopick.core may never import: the Scipion side of the plugin and Scipion itself
NOT_IN_CORE = ("tomopick.protocols", "tomopick.viewers", "tomopick.convert", "tomopick.wizards",
               "tomopick.cli", "tomopick.demo", "tomopick.tests", "pyworkflow", "pwem", "tomo")


def _modules():
    """tomopick's modules: dotted name -> path (tests left out: they may import anything)."""
    found = {}
    root = os.path.dirname(PACKAGE)
    for folder, dirs, files in os.walk(PACKAGE):
        dirs[:] = sorted(d for d in dirs if d not in ("__pycache__", "tests"))
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                dotted = os.path.relpath(path, root)[:-3].replace(os.sep, ".")
                found[dotted.removesuffix(".__init__")] = path
    return found


def _imports(module, path, modules):
    """Names `module` imports (tomopick modules resolved; others as written)."""
    is_package = path.endswith("__init__.py")
    with open(path, encoding="utf-8") as fh:
        tree = ast.parse(fh.read(), path)
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = module.split(".")
                anchor = parts if is_package else parts[:-1]
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                names.add(candidate if candidate in modules else base)
    return names


@pytest.fixture(scope="module")
def graph():
    modules = _modules()
    return {m: _imports(m, p, modules) for m, p in modules.items()}


def _within(name, prefix):
    return name == prefix or name.startswith(prefix + ".")


def test_the_walk_finds_the_packages_and_resolves_relative_imports(graph):
    assert {"tomopick.core", "tomopick.core.geometry.models", "tomopick.protocols",
            "tomopick.convert"} <= set(graph)
    assert "tomopick.core.rotations" in graph["tomopick.core.geometry.models"]
    assert "tomopick.core.geometry.quadrics" in graph["tomopick.core.geometry.models"]


def test_core_imports_nothing_from_protocols_viewers_or_scipion(graph):
    bad = sorted(f"{m} imports {name}" for m, names in graph.items()
                 if _within(m, "tomopick.core")
                 for name in names if any(_within(name, p) for p in NOT_IN_CORE)
                 or name == "tomopick")
    assert not bad, "\n".join(bad)


def test_no_circular_imports_between_tomopick_modules(graph):
    edges = {m: sorted(n for n in names if n in graph and n != m) for m, names in graph.items()}
    cycles, state = [], {}

    def visit(node, stack):
        state[node] = "open"
        stack.append(node)
        for nxt in edges[node]:
            if state.get(nxt) == "open":
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = "done"

    for module in sorted(edges):
        if module not in state:
            visit(module, [])
    assert not cycles, "\n".join(cycles)


def test_viewers_import_nothing_from_protocols(graph):
    """The viewers find tomopick's protocols through pyworkflow's registry, by module name."""
    assert {"tomopick.viewers.scipion_viewers", "tomopick.viewers.view_spec",
            "tomopick.viewers.subsets"} <= set(graph)
    bad = sorted(f"{m} imports {name}" for m, names in graph.items()
                 if _within(m, "tomopick.viewers")
                 for name in names if _within(name, "tomopick.protocols"))
    assert not bad, "\n".join(bad)
    assert "tomopick.viewers.subsets" in graph["tomopick.viewers.scipion_viewers"]
