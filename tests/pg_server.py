"""A throw-away PostgreSQL server for tests: initdb into a temporary directory, listening only on
a unix socket there, run as the 'postgres' OS user when the tests run as root."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path


def _bindir() -> Path:
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4])
    )
    if not found:
        raise RuntimeError(
            "PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin/initdb): "
            "install postgresql-15 (scripts/host-setup.sh does)"
        )
    return Path(found[-1]).parent


class PgServer:
    """initdb + pg_ctl start in a fresh directory; `stop()` kills it and removes everything."""

    def __init__(self) -> None:
        self.bindir = _bindir()
        self.dir = Path(tempfile.mkdtemp(prefix="iacloud-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"
        # Postgres refuses to run as root: run it as the Debian package's 'postgres' user.
        self._as: list[str] = []
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.dir, user.pw_uid, user.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]
        self.user = "postgres" if self._as else pwd.getpwuid(os.geteuid()).pw_name

    def _run(self, *args: str) -> None:
        subprocess.run([*self._as, *args], check=True, capture_output=True, timeout=120)

    def start(self) -> PgServer:
        try:
            self._run(
                str(self.bindir / "initdb"), "-D", str(self.data), "-U", self.user,
                "-A", "trust", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync", "--no-instructions",
            )  # fmt: skip
            options = f"-c listen_addresses='' -k {self.dir} -c fsync=on -c max_connections=50"
            self._run(
                str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log),
                "-o", options, "-w", "-t", "60", "start",
            )  # fmt: skip
        except BaseException as exc:
            log = self.log.read_text() if self.log.exists() else ""
            out = getattr(exc, "stderr", b"") or b""
            self.stop()
            raise RuntimeError(f"test PostgreSQL did not start: {out.decode()} {log}") from exc
        return self

    def url(self, schema: str | None = None, database: str = "postgres") -> str:
        query = f"host={self.dir}"
        if schema:
            query += f"&schema={schema}"
        return f"postgresql://{self.user}@/{database}?{query}"

    def fresh_url(self) -> str:
        """A URL on a schema no other test uses: each test starts from an empty store."""
        return self.url(f"t_{uuid.uuid4().hex[:12]}")

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate",
                          "-w", "stop")  # fmt: skip
        shutil.rmtree(self.dir, ignore_errors=True)
