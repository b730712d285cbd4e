"""``python -m molhpo`` runs the command line."""

from molhpo.cli import main

raise SystemExit(main())
