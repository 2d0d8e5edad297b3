"""Load on `iacloud serve` from bounded clients on 127.0.0.1 (a server process started here,
SQLite state in a temporary directory, the fake provider of tests/fake_provider.py).

Three figures, with their targets:
  1. creating N stacks (default 1,000, empty templates): the time until the 202 (p50/p99;
     target p99 < 100 ms);
  2. listing those N stacks from C concurrent clients (p50/p99; target p99 < 50 ms);
  3. an apply of R fake resources (default 100, each step sleeping S seconds as a stand-in for
     host work, -j 4), alone and then while P clients (default 100) each poll its operation
     every I seconds: the slowdown (target < 10%).

Every loop is bounded in count and time; the server is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from iacloud import engine
from iacloud.identity import IdentityStore

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _fake_dist(root: Path) -> Path:
    """The fake provider registered through an entry point, as tests/conftest.py does."""
    info = root / "iacloud_fake-0.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: iacloud-fake\nVersion: 0.0\n")
    (info / "entry_points.txt").write_text(
        "[iacloud.providers]\nfake = fake_provider:FakeProvider\n"
    )
    return root


def _token(state_url: str) -> str:
    """An admin token of project `bench`, made in the state database before the server starts."""
    engine.prepare_state(state_url)
    with IdentityStore.open(state_url) as store:
        store.create_project("bench")
        store.create_user("bench", "bench password")
        store.grant("bench", "bench", "admin")
        return store.issue_token("bench", "bench").token


Started = tuple[subprocess.Popen[bytes], str, str]


def start_server(tmp: Path, workers: int, state_url: str) -> Started:
    token = _token(state_url)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(_fake_dist(tmp / "dist")), str(TESTS)])
    env["IACLOUD_DATA_DIR"] = str(tmp / "data")
    port = _free_port()
    command = ["-m", "iacloud.cli.main", "serve", "--state", state_url, "--listen",
               f"127.0.0.1:{port}", "--data-dir", str(tmp / "serve"),
               "--workers", str(workers)]  # fmt: skip
    log = open(tmp / "server.log", "wb")  # noqa: SIM115 - the server's lifetime
    proc = subprocess.Popen([sys.executable, *command], env=env, stdout=log,
                            stderr=subprocess.STDOUT)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return proc, url, token
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the server did not start; see {tmp / 'server.log'}")
        time.sleep(0.1)


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def ms(v: float) -> str:
    return f"{v * 1000:.1f} ms"


async def create_many(client: httpx.AsyncClient, n: int, clients: int) -> list[float]:
    latencies: list[float] = []
    names = iter(range(n))

    async def one_client() -> None:
        for i in names:
            t0 = time.perf_counter()
            r = await client.post("/v1/bench/stacks", json={"stack_name": f"s{i:05d}",
                                  "template": "version = 1\n"})  # fmt: skip
            latencies.append(time.perf_counter() - t0)
            assert r.status_code == 202, r.text

    await asyncio.gather(*(one_client() for _ in range(clients)))
    return latencies


async def wait_idle(client: httpx.AsyncClient, n: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stacks = (await client.get("/v1/bench/stacks", params={"limit": n})).json()["stacks"]
        if sum(s["status"] == "CREATE_COMPLETE" for s in stacks) >= n:
            return
        await asyncio.sleep(0.5)
    raise SystemExit("the creates did not complete in time")


async def list_many(client: httpx.AsyncClient, n: int, requests: int, clients: int) -> list[float]:
    latencies: list[float] = []
    left = iter(range(requests))
    first = await client.get("/v1/bench/stacks", params={"limit": n})
    assert len(first.json()["stacks"]) == n
    size = len(first.content)

    async def one_client() -> None:
        for _ in left:
            t0 = time.perf_counter()
            r = await client.get("/v1/bench/stacks", params={"limit": n})
            latencies.append(time.perf_counter() - t0)
            # not parsed: one client process parsing every answer would delay the others
            assert r.status_code == 200 and len(r.content) == size

    await asyncio.gather(*(one_client() for _ in range(clients)))
    return latencies


def apply_text(resources: int, sleep: float) -> str:
    out = ["version = 1", ""]
    for i in range(resources):
        out += [f"[resources.r{i}]", 'type = "fake_thing"', f"sleep = {sleep}", ""]
    return "\n".join(out)


async def timed_apply(client: httpx.AsyncClient, name: str, text: str, pollers: int,
                      interval: float, timeout: float) -> tuple[float, int]:  # fmt: skip
    r = await client.post("/v1/bench/stacks", json={"stack_name": name, "template": text})
    location = r.headers["Location"]
    polls = 0
    done = asyncio.Event()

    async def poll() -> None:
        nonlocal polls
        while not done.is_set():
            await client.get(location)
            polls += 1
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(done.wait(), interval)

    tasks = [asyncio.create_task(poll()) for _ in range(pollers)]
    op = (await client.get(f"{location}/wait", params={"timeout": timeout})).json()
    while op["status"] not in ("COMPLETE", "FAILED", "CANCELLED"):
        op = (await client.get(f"{location}/wait", params={"timeout": timeout})).json()
    done.set()
    await asyncio.gather(*tasks)
    assert op["status"] == "COMPLETE", op
    started = op["started_at"]
    finished = op["finished_at"]
    from datetime import datetime

    took = (datetime.fromisoformat(finished) - datetime.fromisoformat(started)).total_seconds()
    return took, polls


async def main_async(args: argparse.Namespace, url: str, token: str) -> None:
    limits = httpx.Limits(
        max_connections=args.pollers + 10, max_keepalive_connections=args.pollers + 10
    )
    headers = {"X-Auth-Token": token}
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=120) as c:
        created = await create_many(c, args.stacks, args.clients)
        print(f"create -> 202, {args.stacks} stacks from {args.clients} clients: "
              f"p50 {ms(statistics.median(created))}, p99 {ms(pct(created, 99))} "
              f"(target p99 < 100 ms)")  # fmt: skip
        await wait_idle(c, args.stacks, timeout=600)
        listed = await list_many(c, args.stacks, args.list_requests, args.clients)
        print(f"list of {args.stacks} stacks, {args.list_requests} requests from {args.clients} "
              f"clients: p50 {ms(statistics.median(listed))}, p99 {ms(pct(listed, 99))} "
              f"(target p99 < 50 ms)")  # fmt: skip
        text = apply_text(args.resources, args.sleep)
        base, _ = await timed_apply(c, "apply-alone", text, 0, args.interval, 600)
        busy, polls = await timed_apply(c, "apply-polled", text, args.pollers, args.interval, 600)
        print(f"apply of {args.resources} fake resources ({args.sleep}s each, -j 4): alone "
              f"{base:.2f}s; with {args.pollers} clients polling every {args.interval}s "
              f"({polls} polls) {busy:.2f}s: slowdown {100 * (busy / base - 1):+.1f}% "
              f"(target < 10%)")  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--stacks", type=int, default=1000)
    p.add_argument("--clients", type=int, default=4, help="concurrent clients creating and listing")
    p.add_argument("--list-requests", type=int, default=300)
    p.add_argument("--resources", type=int, default=100)
    p.add_argument("--sleep", type=float, default=0.2, help="seconds each fake step takes")
    p.add_argument("--pollers", type=int, default=100)
    p.add_argument("--interval", type=float, default=1.0, help="seconds between one client's polls")
    p.add_argument("--postgres", action="store_true",
                   help="state in a PostgreSQL server started here")  # fmt: skip
    args = p.parse_args()
    if not 1 <= args.pollers <= 200 or not 1 <= args.clients <= 50 or args.stacks > 5000:
        raise SystemExit("keep the load bounded: pollers 1-200, clients 1-50, stacks <= 5000")
    with tempfile.TemporaryDirectory(prefix="ap-api-load-") as d:
        tmp = Path(d)
        pg = None
        if args.postgres:
            sys.path.insert(0, str(TESTS))
            from pg_server import PgServer

            pg = PgServer().start()
        state_url = pg.fresh_url() if pg else f"sqlite:///{tmp / 'state.db'}"
        print(f"state: {'PostgreSQL' if pg else 'SQLite'}")
        proc, url, token = start_server(tmp, 4, state_url)
        try:
            asyncio.run(main_async(args, url, token))
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
            if pg is not None:
                pg.stop()


if __name__ == "__main__":
    main()
