"""The code passes ruff, so style is checked wherever the tests run."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ruff_check() -> None:
    """Ruff check finds nothing."""
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", str(ROOT)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format() -> None:
    """Ruff format would change nothing."""
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--check", "--no-cache", str(ROOT)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _imports(path: Path, name: str, modules: set[str]) -> set[str]:
    """The modules of C{modules} that the module C{name} (at C{path}) imports.

    Every import counts, those only for type checking and those inside
    functions too: each is a place where one module needs the other.
    """
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        elif isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            continue
        found.update(t for t in targets if t in modules and t != name)
    return found


def test_no_import_circle() -> None:
    """No module of chatservice imports, even indirectly, one that imports it."""
    paths = {}
    for path in (ROOT / "chatservice").rglob("*.py"):
        parts = path.with_suffix("").relative_to(ROOT).parts
        paths[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {name: _imports(path, name, set(paths)) for name, path in paths.items()}
    circles = []
    for start in graph:
        # Every module reachable from start; start among them is a circle.
        seen, todo = set(), list(graph[start])
        while todo:
            name = todo.pop()
            if name not in seen:
                seen.add(name)
                todo.extend(graph[name])
        if start in seen:
            circles.append(start)
    assert circles == []
