"""`python -m simulator`: serve every provider's fake until SIGTERM or SIGINT."""

from __future__ import annotations

from simulator.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
