"""rkd_pml has no circle of imports: read from the source (ast), every import counted, those inside
functions too (a lazy import still ties the two modules together), those under
``if TYPE_CHECKING:`` not (they never run)."""

import ast
from pathlib import Path

import rkd_pml

PACKAGE = Path(rkd_pml.__file__).parent


def module_names(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of the package at ``root``."""
    out = {}
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _runs(node: ast.AST) -> list[ast.AST]:
    """The statements under ``node`` that can run (not the body of ``if TYPE_CHECKING:``)."""
    out = []
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
            out += [n for stmt in child.orelse for n in [stmt, *_runs(stmt)]]
            continue
        out += [child, *_runs(child)]
    return out


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that module ``name`` (file ``path``) imports."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in _runs(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")[: len(name.split(".")) - node.level + (1 if is_package else 0)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            targets = [f"{source}.{alias.name}" if f"{source}.{alias.name}" in modules else source for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # "a.b.c" where c is a name in module a.b
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_cycles(root: Path) -> list[list[str]]:
    """The circles of imports among the modules of the package at ``root`` (strongly connected
    components of more than one module, each sorted), found by Tarjan's algorithm."""
    modules = module_names(root)
    graph = {name: sorted(imports_of(name, path, modules)) for name, path in modules.items()}
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v: str) -> None:
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
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(cycles)


def test_the_package_has_no_import_cycle():
    assert import_cycles(PACKAGE) == []


def test_the_check_finds_a_cycle_through_a_lazy_import(tmp_path):
    """Two modules that import each other, one of them inside a function (as data/views.py and
    data/transforms.py did), and a third that only imports under TYPE_CHECKING."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from .a import A\n")
    (pkg / "sub" / "a.py").write_text("from .b import B\nA = 1\n")
    (pkg / "sub" / "b.py").write_text("B = 2\ndef f():\n    from . import a\n    return a\n")
    (pkg / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .sub.a import A\n")
    (pkg / "d.py").write_text("from .c import *\n")
    assert import_cycles(pkg) == [["pkg.sub.a", "pkg.sub.b"]]
    assert imports_of("pkg.c", pkg / "c.py", module_names(pkg)) == set()
    assert imports_of("pkg.sub", pkg / "sub" / "__init__.py", module_names(pkg)) == {"pkg.sub.a"}
