"""`iacloud serve`: the HTTP API (iacloud/api/) under uvicorn."""

from __future__ import annotations

import re
from pathlib import Path

import click

from iacloud.cli.app import handled
from iacloud.engine import UserError, data_root, prepare_state

_LISTEN = re.compile(r"(?P<host>[A-Za-z0-9.:\[\]-]+):(?P<port>[0-9]{1,5})")


def parse_listen(text: str) -> tuple[str, int]:
    m = _LISTEN.fullmatch(text)
    if not m or not 0 < int(m["port"]) < 65536:
        raise UserError(f"--listen expects HOST:PORT, for example 127.0.0.1:8780; found {text!r}")
    return m["host"].strip("[]"), int(m["port"])


def default_state() -> str:
    return f"sqlite:///{data_root() / 'serve' / 'state.db'}"


@click.command()
@click.option("--listen", default="127.0.0.1:8780", show_default=True, metavar="HOST:PORT")
@click.option("--state", "state_url", envvar="IACLOUD_STATE", metavar="URL",
              help="State database, shared with the service's own tables: postgresql://... "
              "(several servers share its jobs) or sqlite:///PATH (one server). "
              "Default: <data dir>/serve/state.db.")  # fmt: skip
@click.option("--workers", default=4, show_default=True, type=click.IntRange(1, 64),
              help="Operations run at once by this server.")  # fmt: skip
@click.option("-j", "--jobs", default=4, show_default=True, type=click.IntRange(1, 64),
              help="Steps at once within one operation.")  # fmt: skip
@click.option("--lock-timeout", type=float, default=60.0, show_default=True,
              help="Seconds an operation waits for a stack's lock held elsewhere.")  # fmt: skip
@click.option("--stale-after", type=click.FloatRange(1, 3600), default=30.0, show_default=True,
              help="PostgreSQL: seconds without a heartbeat after which another server marks "
              "a running operation as its dead server's.")  # fmt: skip
@click.option("--data-dir", type=click.Path(path_type=Path, file_okay=False),
              help="The server's files (templates written for runs). "
              "Default: <data dir>/serve.")  # fmt: skip
@handled
def serve(listen: str, state_url: str | None, workers: int, jobs: int, lock_timeout: float,
          stale_after: float, data_dir: Path | None) -> None:  # fmt: skip
    """Serve the HTTP API: stacks, operations (202 + poll, wait, events, cancel), /metrics."""
    # imported here: every other command would pay for FastAPI and uvicorn at start-up
    import uvicorn

    from iacloud.api import ServeSettings, create_app
    from iacloud.identity import IdentityStore

    host, port = parse_listen(listen)
    url = state_url or default_state()
    settings = ServeSettings(
        state_url=url,
        data_dir=data_dir or data_root() / "serve",
        workers=workers,
        step_jobs=jobs,
        lock_timeout=lock_timeout,
        stale_after=stale_after,
    )
    prepare_state(url)  # before the identity store adds its tables to a new SQLite file
    app = create_app(settings, IdentityStore.open(url))
    uvicorn.run(app, host=host, port=port, log_level="info", access_log=False)
