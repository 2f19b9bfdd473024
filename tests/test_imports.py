"""The import graph: no module imports itself back through others, and the builder and the node never import each other.

Walks every module's `import` and `from ... import` statements with `ast`, those inside functions too (a
deferred import is still a dependency), and resolves each to a module of this project.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("airlock", "builder", "bundle", "installer")


def module_names() -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            modules[name] = path
    return modules


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules `name` imports, anywhere in its body."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            # `from pkg import mod` imports the module pkg.mod where there is one, else a name of pkg.
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def graph() -> dict[str, set[str]]:
    modules = module_names()
    edges = {name: imports_of(name, path, modules) for name, path in modules.items()}
    # Importing pkg.mod runs pkg/__init__ first, but that is not pkg.mod depending on pkg: only explicit imports count.
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), each as a sorted list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(edges.get(node, ())):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_the_walker_sees_imports_inside_functions_and_relative_ones(tmp_path):
    sample = tmp_path / "installer" / "phases" / "one.py"
    sample.parent.mkdir(parents=True)
    sample.write_text("import os\nfrom . import two\ndef run():\n    from installer.node import NodeError\n")
    modules = {"installer.phases.one": sample, "installer.phases.two": sample, "installer.node": sample, "installer.phases": sample, "installer": sample}
    assert imports_of("installer.phases.one", sample, modules) == {"installer.phases.two", "installer.node"}
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_imports_itself_back():
    assert cycles(graph()) == []


def test_the_builder_and_the_node_installer_never_import_each_other():
    crossings = sorted(
        f"{name} imports {target}"
        for name, targets in graph().items()
        for target in targets
        if {name.split(".")[0], target.split(".")[0]} == {"builder", "installer"}
    )
    assert crossings == []


def test_the_format_package_imports_neither_half():
    assert sorted(f"{name} imports {target}" for name, targets in graph().items() if name.split(".")[0] == "bundle"
                  for target in targets if target.split(".")[0] in ("builder", "installer")) == []


def phase_modules(edges: dict[str, set[str]]) -> set[str]:
    """The modules under installer/phases that are phases (the package itself defines what a phase is)."""
    return {name for name in edges if name.startswith("installer.phases.")}


def test_no_phase_imports_another_phase():
    edges = graph()
    phases = phase_modules(edges)
    assert len(phases) >= 12
    assert sorted(f"{name} imports {target}" for name in phases for target in edges[name] if target in phases) == []


def test_the_phase_lists_are_in_one_module():
    """installer.workflow orders the phases of init, join and upgrade; no other module gathers phases."""
    edges = graph()
    phases = phase_modules(edges)
    gatherers = sorted(name for name, targets in edges.items() if len(targets & phases) > 1)
    assert gatherers == ["installer.workflow"]
    assert edges["installer.workflow"] >= phases


def test_the_phase_rule_sees_a_phase_importing_another(tmp_path):
    first, second = tmp_path / "preflight.py", tmp_path / "unpack.py"
    first.write_text("def run(context):\n    from installer.phases.unpack import space_needed\n")
    second.write_text("")
    modules = {"installer.phases.preflight": first, "installer.phases.unpack": second, "installer.phases": second}
    edges = {name: imports_of(name, path, modules) for name, path in modules.items()}
    assert edges["installer.phases.preflight"] & phase_modules(edges) == {"installer.phases.unpack"}
