"""C{python -m chatservice.tools.client}: the same as C{chatservice-client}."""

from .cli import main

raise SystemExit(main())
