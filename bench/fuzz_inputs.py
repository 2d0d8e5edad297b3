"""Fuzzing the inputs a user (or a pull request) hands iacloud: generated bad stack files, HOT
templates, env files, -p values and saved plan files, run through the CLI in-process (click's
CliRunner, the real commands and engine). Prints the count of each outcome per kind of input;
targets: 0 tracebacks, 0 runs over 2 s.

Nothing here touches the host: stacks go through `validate`, `plan --no-refresh`, `graph` and
the read commands; saved plans through `apply PLAN.json` with the executor's run replaced by one
that does nothing, so a plan that passes every check is counted ("applied") but creates nothing.
Everything is written under a temporary directory (IACLOUD_DATA_DIR too), removed at the end
unless --keep. Inputs that gave a traceback or took too long are saved for reproduction.

    .venv/bin/python bench/fuzz_inputs.py [-n 12000] [--seed 1] [--keep]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import re
import resource
import shutil
import sys
import tempfile
import time
import traceback
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
LIMIT_S = 2.0

import yaml  # noqa: E402
from toml_text import toml_string, toml_value  # noqa: E402

from iacloud.loading.yaml_input import parse_yaml  # noqa: E402

BASE_TEMPLATE = (ROOT / "examples" / "heat" / "two-servers.yaml").read_text()

BASE_STACK = """
version = 1
name = "fz"
description = "the fuzzer's seed: every resource type, functions, counts and constraints"

[parameters.count]
type = "number"
default = 2
constraints = [{ range = { min = 0, max = 8 } }]

[parameters.size]
type = "number"
default = 1

[parameters.pattern]
type = "string"
default = "abc"
constraints = [{ allowed_pattern = "[a-z]+" }, { length = { min = 1, max = 20 } }]

[parameters.keys]
type = "list"
default = ["ssh-ed25519 AAAA fz"]
hidden = true

[parameters.meta]
type = "map"
default = { a = 1, b = "x" }

[resources.img]
type = "image"
source = "images/base.raw"
format = "raw"

[resources.lan]
type = "network"
cidr = "198.18.20.0/24"
dns = ["198.18.20.53"]

[resources.wan]
type = "network"
cidr = "198.18.21.0/24"
dhcp = false
external = true

[resources.db]
type = "port"
network = { get_resource = "lan" }
ip = "198.18.20.5"

[resources.data]
type = "volume"
count = { get_param = "count" }
size_gib = { get_param = "size" }

[resources.web]
type = "server"
count = { get_param = "count" }
image = { get_resource = "img" }
vcpus = 1
memory_mib = 256
hostname = "web-%index%"
networks = [{ network = { get_resource = "lan" } }, { port = { get_resource = "db" } }]
volumes = [{ get_resource = "data[%index%]" }]
ssh_keys = { get_param = "keys" }
user_data = { str_replace = { template = "echo $I $P", params = { "$I" = "%index%", "$P" = "p" } } }
depends_on = ["lan"]

[resources.gw]
type = "router"
networks = [{ get_resource = "lan" }]
external = { network = { get_resource = "wan" }, ip = "198.18.21.7" }

[outputs.names]
value = { get_attr = ["web", "name"] }

[outputs.joined]
value = { list_join = [",", { get_attr = ["web", "hostname"] }] }

[provider.libvirt]
pool = "fz"
pool_path = "/var/lib/iacloud/fz-pool"
"""

# values that have broken readers and validators before, or are meant to
NASTY: list[Any] = [
    0, -1, 1, 2**63, -(2**63) - 1, 10**30, 1.5, float("inf"), float("nan"), -0.0, True, False,
    "", " ", "x" * 5000, "\n", "web\n", "a\x00b", "\x1b[31mred", "\u202egnp.exe", "%index%",
    "web-%index%", "../../../etc/passwd", "/etc/shadow", "file:///etc/shadow", "/dev/zero",
    "http://example.com/x", "198.18.20.0/24\nError: forged", "198.18.20.300", "::1", "0.0.0.0/0",
    "52:54:00:00:00:01", "ff:ff:ff:ff:ff:ff", "(a+)+$", "(a)\\1", "[", "{get_param=", "é" * 50,
    [], [1, [2, [3]]], {}, {"a": {"b": {}}}, {"get_param": "count"}, {"get_param": "nope"},
    {"get_param": ["meta", "a", "z"]}, {"get_resource": "web"}, {"get_resource": "web[99]"},
    {"get_resource": "nope"}, {"get_resource": "data[%index%]"}, {"get_attr": ["web", "bogus"]},
    {"get_attr": ["lan", "id", 0, "x"]}, {"get_attr": "web"}, {"str_replace": "x"},
    {"str_replace": {"template": 1, "params": []}}, {"list_join": [",", "x"]},
    {"list_join": [{"get_param": "meta"}]}, {"get_parm": "count"}, {"Get_Resource": "lan"},
    {"get_param": "count", "extra": 1},
]  # fmt: skip
FIELDS = ["type", "count", "depends_on", "source", "format", "sha256", "pool", "size_gib",
          "image", "boot_volume", "cidr", "gateway", "dhcp", "dhcp_range", "dns", "mtu",
          "segment", "network", "ip", "mac", "vcpus", "memory_mib", "networks", "volumes",
          "user_data", "ssh_keys", "power_state", "hostname", "external", "default",
          "constraints", "hidden", "value", "uri", "virt_type_cache", "pool_path", "state_dir",
          "image_roots", "properties", "version", "name"]  # fmt: skip


# -- generation ------------------------------------------------------------------------------


DEEP = "@@deep:"
_DEEP = re.compile(r'"@@deep:(\d+):([\[{])"')


def deepen(text: str, toml: bool) -> str:
    """Replace the markers of random_value by nesting that deep."""

    def nested(m: re.Match[str]) -> str:
        n = int(m.group(1))
        if m.group(2) == "[":
            return "[" * n + "1" + "]" * n
        key = "k = " if toml else '"k": '
        return ("{" + key) * n + "1" + "}" * n

    return _DEEP.sub(nested, text)


def toml_document(doc: dict[str, Any]) -> str:
    lines = []
    for key, value in doc.items():
        if isinstance(value, dict) and all(isinstance(v, dict) for v in value.values()) and value:
            for name, table in value.items():  # [section.name] tables, like a user writes
                lines.append(f"[{toml_string(key)}.{toml_string(str(name))}]")
                lines += [f"{toml_string(str(k))} = {toml_value(v)}" for k, v in table.items()]
        else:
            lines.insert(0, f"{toml_string(key)} = {toml_value(value)}")
    return deepen("\n".join(lines) + "\n", toml=True)


def random_value(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.random()
    if roll < 0.55 or depth > 3:
        return copy.deepcopy(rng.choice(NASTY))  # mutations edit lists in place
    if roll < 0.65:
        return rng.randint(-(2**64), 2**64)
    if roll < 0.72:
        # deeper than any limit, in one of the shapes TOML and JSON nest: a marker, replaced by
        # the nested text after serializing (building it as a value would recurse here too)
        return f"{DEEP}{rng.choice([65, 200, 1000, 100_000])}:{rng.choice('[{')}"
    if roll < 0.86:
        return [random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return {rng.choice(FIELDS): random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))}


def nodes(value: Any, path: tuple = ()) -> list[tuple]:
    out = [path]
    if isinstance(value, dict):
        for k, v in value.items():
            out += nodes(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += nodes(v, (*path, i))
    return out


def mutate_tree(doc: Any, rng: random.Random) -> Any:
    doc = json.loads(json.dumps(doc))
    for _ in range(rng.randint(1, 4)):
        paths = nodes(doc)[1:]
        if not paths:
            break
        path = rng.choice(paths)
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        action = rng.random()
        if action < 0.2 and isinstance(parent, dict):
            del parent[path[-1]]
        elif action < 0.35 and isinstance(parent, dict):
            parent[rng.choice(FIELDS)] = random_value(rng)
        elif action < 0.45 and isinstance(parent, list):
            parent.extend(parent[: rng.randint(1, 3)] * rng.randint(1, 50))
        else:
            parent[path[-1]] = random_value(rng)
    return doc


def mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    for _ in range(rng.randint(1, 4)):
        i = rng.randint(0, len(data))
        j = min(len(data), i + rng.randint(0, 60))
        roll = rng.random()
        if roll < 0.3:
            data = data[:i] + data[j:]
        elif roll < 0.5:
            data = data[:j] + data[i:j] * rng.randint(2, 200) + data[j:]
        else:
            piece = rng.choice([
                b"[" * 500, b"{a=" * 500, b"9" * 5000, b"\xff\xfe", b"\xc3", b'"', b"'''",
                b"\n[resources.web]\n", b"\x00", b"\r\n", b"= =", b"1e999", b"-0x7f",
                bytes(rng.randrange(256) for _ in range(rng.randint(1, 8))),
            ])  # fmt: skip
            data = data[:i] + piece + data[i:]
    return data


# -- running ---------------------------------------------------------------------------------


class Bench:
    def __init__(self, work: Path, seed: int) -> None:
        from click.testing import CliRunner

        from iacloud import executor
        from iacloud.cli.main import cli

        self.cli = cli
        self.runner = CliRunner()
        self.work = work
        self.rng = random.Random(seed)
        self.outcomes: dict[str, Counter[str]] = defaultdict(Counter)
        self.durations: list[float] = []
        self.saved: list[str] = []
        self.case = 0
        self.found = Path(tempfile.gettempdir()) / f"iacloud-fuzz-found-{seed}"
        shutil.rmtree(self.found, ignore_errors=True)
        # a plan that passes every check is run by an executor that touches nothing
        executor.Executor.run = lambda self: executor.ApplyResult()  # type: ignore[method-assign]
        (work / "images").mkdir()
        (work / "images" / "base.raw").write_bytes(b"\0" * 512)

    def invoke(self, kind: str, args: list[str], inputs: dict[str, bytes]) -> None:
        self.case += 1
        started = time.perf_counter()
        result = self.runner.invoke(self.cli, args, catch_exceptions=True)
        took = time.perf_counter() - started
        self.durations.append(took)
        exc = result.exception
        if exc is not None and not isinstance(exc, SystemExit):
            outcome = "traceback"
            detail = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        elif result.exit_code == 0:
            outcome = "applied" if args[0] == "apply" else "ok"
            detail = ""
        elif "Error:" in result.output or '"valid": false' in result.output:
            outcome = "clean error"
            detail = ""
        else:
            outcome = "exit without message"
            detail = result.output
        self.outcomes[kind][outcome] += 1
        if took > LIMIT_S:
            self.outcomes[kind]["over 2 s"] += 1
        if outcome in ("traceback", "exit without message") or took > LIMIT_S:
            self.save(kind, args, inputs, f"{outcome} in {took:.2f}s\n{detail}")

    def save(self, kind: str, args: list[str], inputs: dict[str, bytes], what: str) -> None:
        d = self.found / f"{self.case:05d}-{kind.replace(' ', '-')}"
        d.mkdir(parents=True, exist_ok=True)
        for name, data in inputs.items():
            (d / name).write_bytes(data)
        (d / "README").write_text(f"iacloud {' '.join(args)}\n{what}")
        self.saved.append(str(d))

    def write(self, name: str, data: bytes) -> Path:
        path = self.work / name
        if path.is_symlink() or path.exists():
            path.unlink()
        path.write_bytes(data)
        return path

    # -- the kinds of input ---------------------------------------------------------------

    def stack_file(self) -> None:
        rng = self.rng
        base = tomllib.loads(BASE_STACK)
        if rng.random() < 0.6:
            data = toml_document(mutate_tree(base, rng)).encode()
        else:
            data = mutate_bytes(BASE_STACK.encode(), rng)
        path = self.write("stack.toml", data)
        command = rng.choice(["validate", "validate", "plan", "graph", "show", "output"])
        args = {
            "validate": ["validate", str(path)],
            "plan": ["plan", "--no-refresh", "--state", str(self.work / "state.db"), str(path)],
            "graph": ["graph", str(path)],
            "show": ["show", "--stack", str(path), "--state", str(self.work / "state.db")],
            "output": ["output", "--stack", str(path), "--state", str(self.work / "state.db")],
        }[command]
        self.invoke("stack file", args, {"stack.toml": data})

    def hot_template(self) -> None:
        rng = self.rng
        if rng.random() < 0.6:
            tree = mutate_tree(parse_yaml(BASE_TEMPLATE)[0], rng)  # dates stay text
            data = yaml.safe_dump(tree, default_flow_style=rng.random() < 0.5).encode()
        else:
            data = mutate_bytes(BASE_TEMPLATE.encode(), rng)
        path = self.write("stack.yaml", data)
        command = rng.choice(["validate", "validate", "plan", "graph"])
        args = {
            "validate": ["validate", str(path)],
            "plan": ["plan", "--no-refresh", "--state", str(self.work / "state.db"), str(path)],
            "graph": ["graph", str(path)],
        }[command]
        self.invoke("HOT template", args, {"stack.yaml": data})

    def env_and_params(self) -> None:
        rng = self.rng
        stack = self.write("stack.toml", BASE_STACK.encode())
        names = ["count", "size", "pattern", "keys", "meta", "nope"]
        env = {"parameters": {rng.choice(names): random_value(rng) for _ in range(3)}}
        if rng.random() < 0.2:
            env = mutate_tree(env, rng)
        data = toml_document(env).encode()
        if rng.random() < 0.3:
            data = mutate_bytes(data, rng)
        env_file = self.write("env.toml", data)
        args = ["validate", str(stack), "-e", str(env_file)]
        for _ in range(rng.randint(0, 3)):
            value = random_value(rng)
            text = deepen(value if isinstance(value, str) else json.dumps(value), toml=False)
            if text.startswith(DEEP):
                text = deepen(json.dumps(text), toml=False)
            args += ["-p", f"{rng.choice(names)}={text}"]
        self.invoke("env file and -p", args, {"env.toml": data})

    def plan_file(self, seed_plan: dict[str, Any]) -> None:
        rng = self.rng
        if rng.random() < 0.6:
            data = deepen(json.dumps(mutate_tree(seed_plan, rng)), toml=False).encode()
        else:
            data = mutate_bytes(json.dumps(seed_plan, indent=1).encode(), rng)
        path = self.write("plan.json", data)
        state = self.work / "plan-state" / f"{self.case}.db"
        self.invoke("plan file", ["apply", str(path), "--state", str(state)], {"plan.json": data})
        shutil.rmtree(self.work / "plan-state", ignore_errors=True)

    def special_files(self) -> None:
        """Files that are not files: each once per run."""
        fifo = self.work / "fifo.toml"
        os.mkfifo(fifo)
        big = self.write("big.toml", b"#" * (17 << 20))
        loop = self.work / "loop.toml"
        loop.symlink_to(loop)
        for target in ("/dev/zero", str(fifo), str(big), str(loop), str(self.work), "/nope.toml"):
            plan = target + ".json" if target == "/nope.toml" else target
            for args in (["validate", target], ["show", "--stack", target], ["apply", plan]):
                self.invoke("special file", args, {})
        zero_plan = self.work / "zero.json"
        zero_plan.symlink_to("/dev/zero")
        self.invoke("special file", ["apply", str(zero_plan)], {})
        big.unlink()

    def seed_plan(self) -> dict[str, Any]:
        stack = self.write("stack.toml", BASE_STACK.encode())
        out = self.work / "seed-plan.json"
        state = self.work / "seed-state.db"
        args = ["plan", "--no-refresh", "--state", str(state), "-o", str(out), str(stack)]
        result = self.runner.invoke(self.cli, args)
        if result.exit_code != 0:
            raise SystemExit(f"the seed stack does not plan: {result.output}")
        return json.loads(out.read_text())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=12_000, help="generated inputs (default 12,000)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the working directory")
    parser.add_argument("--no-special-files", action="store_true",
                        help="skip /dev/zero, a FIFO, a 17 MiB file... (an old iacloud reads "
                        "/dev/zero until memory runs out and waits on a FIFO forever)")  # fmt: skip
    args = parser.parse_args()

    base = Path(tempfile.mkdtemp(prefix="iacloud-fuzz-"))
    work = base / "work"
    work.mkdir()
    os.environ["IACLOUD_DATA_DIR"] = str(base / "data")
    for var in ("IACLOUD_STATE", "IACLOUD_STACK", "IACLOUD_IMAGE_ROOTS"):
        os.environ.pop(var, None)
    bench = Bench(work, args.seed)
    started = time.perf_counter()
    try:
        if not args.no_special_files:
            bench.special_files()
        seed_plan = bench.seed_plan()
        kinds: list[tuple[float, Callable[[], None]]] = [
            (0.35, bench.stack_file),
            (0.15, bench.hot_template),
            (0.25, bench.env_and_params),
            (0.25, lambda: bench.plan_file(seed_plan)),
        ]
        for _ in range(args.n):
            roll, acc = bench.rng.random(), 0.0
            for share, run in kinds:
                acc += share
                if roll < acc:
                    run()
                    break
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    wall = time.perf_counter() - started

    outcomes = ["ok", "applied", "clean error", "exit without message", "traceback", "over 2 s"]
    print(f"{'input':<18}" + "".join(f"{o:>22}" for o in outcomes) + f"{'total':>8}")
    totals: Counter[str] = Counter()
    for kind, counts in sorted(bench.outcomes.items()):
        totals.update(counts)
        runs = sum(v for k, v in counts.items() if k != "over 2 s")
        print(f"{kind:<18}" + "".join(f"{counts[o]:>22}" for o in outcomes) + f"{runs:>8}")
    runs = sum(v for k, v in totals.items() if k != "over 2 s")
    print(f"{'all':<18}" + "".join(f"{totals[o]:>22}" for o in outcomes) + f"{runs:>8}")
    d = sorted(bench.durations)
    print(
        f"\n{runs} runs in {wall:.1f} s; per run: median {d[len(d) // 2] * 1000:.1f} ms, "
        f"p99 {d[int(len(d) * 0.99)] * 1000:.1f} ms, max {d[-1] * 1000:.0f} ms; "
        f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB"
    )
    for path in bench.saved[:20]:
        print(f"saved: {path}")
    bad = totals["traceback"] + totals["over 2 s"] + totals["exit without message"]
    print("target: 0 tracebacks, 0 over 2 s -", "met" if bad == 0 else "NOT met")
    return 0 if bad == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
