"""The modules' imports point one way: no circle, no front end on the factory."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "chatservice"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in PACKAGE.rglob("*.py")}


def imports_at_load(name: str, typing: bool = True) -> set[str]:
    """The chatservice modules C{name} imports at module level.

    Those under C{if TYPE_CHECKING:} count too (unless not C{typing}): a
    circle there is a circle in the design, even if it cannot fail at load.
    Imports inside functions are not counted.
    """
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.If):
                if typing or "TYPE_CHECKING" not in ast.unparse(node.test):
                    visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
                for handler in node.handlers:
                    visit(handler.body)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[
                        : len(package.split(".")) - node.level + 1
                    ]
                    base = ".".join([*parts, *([base] if base else [])])
                found.add(base)
                found.update(f"{base}.{alias.name}" for alias in node.names)

    visit(ast.parse(path.read_text()).body)
    return {module for module in found if module in MODULES and module != name}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every circle a depth-first walk of C{graph} meets."""
    state: dict[str, str] = {}
    path: list[str] = []
    found: list[list[str]] = []

    def walk(node: str) -> None:
        state[node] = "open"
        path.append(node)
        for after in sorted(graph[node]):
            if state.get(after) == "open":
                found.append([*path[path.index(after) :], after])
            elif after not in state:
                walk(after)
        path.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            walk(node)
    return found


def test_circles_are_found() -> None:
    """The check finds a circle where there is one."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert circles(graph) == [["a", "b", "c", "a"]]


def test_no_import_circle() -> None:
    """No chatservice module imports, at load, one that imports it back."""
    graph = {name: imports_at_load(name) for name in MODULES}
    assert circles(graph) == []


@pytest.mark.parametrize(
    "name",
    sorted(
        name
        for name in MODULES
        if name == "chatservice.session" or name.startswith("chatservice.frontends")
    ),
)
def test_sessions_and_front_ends_see_the_server_as_an_interface(name: str) -> None:
    """Sessions and front ends depend on IChatServer, never on the factory."""
    assert "chatservice.factory" not in imports_at_load(name)
