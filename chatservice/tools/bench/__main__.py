"""C{python -m chatservice.tools.bench}: the same as C{chatservice-bench}."""

from .cli import main

main()
