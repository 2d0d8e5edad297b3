"""`iacloud serve` for the API tests with the stand-in identity store (tokens from a file)."""

from __future__ import annotations

import sys
from pathlib import Path

import uvicorn

sys.path.insert(0, str(Path(__file__).parent))

from identity_standin import from_env

from iacloud.api import ServeSettings, create_app


def main() -> None:
    state, port, data_dir = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    workers = int(sys.argv[4]) if len(sys.argv) > 4 else 4
    settings = ServeSettings(state_url=state, data_dir=data_dir, workers=workers,
                             lock_timeout=30.0, stale_after=6.0)  # fmt: skip
    app = create_app(settings, from_env())
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()
