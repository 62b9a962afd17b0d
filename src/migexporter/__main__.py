"""Allow ``python -m migexporter``."""

from migexporter.cli import main

raise SystemExit(main())
