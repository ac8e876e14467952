"""``python -m cartcohort.sheets config.yaml [--base-dir DIR] [--no-files]``."""

from .cli import main

raise SystemExit(main())
