"""`python -m worker` is the `streaming-worker` console script."""

from __future__ import annotations

from worker.cli import main

raise SystemExit(main())
