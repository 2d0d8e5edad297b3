"""A small fake provider for the engine's unit tests: objects are JSON files in a directory.

It exercises every engine path (bulk read, create, update, delete, import, check, replacement,
failures, slow steps) without a host. It proves nothing about the real providers.

An object whose file has a `next_boot` table acts like a running server with a persistent
definition: the table holds the inputs that definition has (what it boots with next), and an
update that changes a `restart` field's live value counts a restart in the attribute `restarts`.
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from iacloud.errors import CleanupUnproven, Diagnostic, ProviderError
from iacloud.provider import (
    ObjectRef,
    Observed,
    Provider,
    ProviderSettings,
    ResourceType,
    TaggedObject,
)
from iacloud.schema import Disruption, Inputs, field_update, prop


class FakeSettings(ProviderSettings):
    path: str | None = None  # directory of the objects; default: the stack's data dir


class ThingInputs(Inputs):
    name: str = prop("thing", update=Disruption.REPLACE)
    size: int = prop(1, update=Disruption.LIVE, ge=0)
    flavor: str = prop("small", update=Disruption.RESTART)
    tags: list[str] = prop([], update=Disruption.LIVE)
    ref: str | None = prop(None, update=Disruption.REPLACE)
    refs: list[str] = prop([], update=Disruption.LIVE)
    secret: str | None = prop(None, update=Disruption.LIVE, sensitive=True)
    sleep: float = prop(0.0, update=Disruption.LIVE)  # seconds each operation takes
    fail: bool = prop(False, update=Disruption.LIVE)  # create/update raise


class DiskInputs(Inputs):
    size_gib: int = prop(update=Disruption.LIVE, ge=1)
    source: str | None = prop(None, update=Disruption.REPLACE)


class _FakeType(ResourceType):
    def _dir(self) -> Path:
        settings = self.provider.settings
        base = Path(settings.path) if settings.path else self.provider.stack.data_dir / "fake"
        d = base / self.type_name
        d.mkdir(parents=True, exist_ok=True)
        return d

    def _observe(self, id: str, data: dict) -> Observed:
        attrs = {"id": id, "name": data["inputs"].get("name"), "echo": data["inputs"]}
        attrs.update(data.get("extra", {}))
        nb = data.get("next_boot")
        return Observed(
            id=id,
            inputs=dict(data["inputs"]),
            attributes=attrs,
            next_boot=None if nb is None else dict(nb),
        )

    def read(self, refs: Sequence[ObjectRef]) -> dict[str, Observed]:
        d = self._dir()
        by_tag = {}
        for f in d.glob("*.json"):  # one listing for all refs: a bulk read
            data = json.loads(f.read_text())
            by_tag[(data.get("stack_id"), data.get("address"))] = (f.stem, data)
        out = {}
        for ref in refs:
            found = None
            if ref.id and (d / f"{ref.id}.json").exists():
                found = (ref.id, json.loads((d / f"{ref.id}.json").read_text()))
            elif ref.id is None:
                found = by_tag.get((self.provider.stack.id, ref.address))
            if found and found[1].get("unreachable"):
                # the test's stand-in for an object on a host that is down
                reason = found[1]["unreachable"]
                out[ref.address] = Observed(
                    ref.id or "", dict(ref.inputs), dict(ref.attributes), unknown=reason
                )
            elif found:
                out[ref.address] = self._observe(*found)
        return out

    def _write(self, id: str, address: str, inputs: Inputs, **more: object) -> Observed:
        data = {
            "stack_id": self.provider.stack.id,
            "address": address,
            "inputs": inputs.model_dump(),
            **more,
        }
        tmp = self._dir() / f".{id}.tmp"
        tmp.write_text(json.dumps(data))
        os.replace(tmp, self._dir() / f"{id}.json")
        return self._observe(id, data)

    def _behave(self, inputs: Inputs) -> None:
        if getattr(inputs, "sleep", 0):
            time.sleep(inputs.sleep)
        if getattr(inputs, "fail", False):
            raise ProviderError("the fake backend was told to fail")

    def create(self, address: str, inputs: Inputs) -> Observed:
        self._behave(inputs)
        return self._write(uuid.uuid4().hex[:12], address, inputs)

    def update(
        self, address: str, prior: Observed, inputs: Inputs, changed: frozenset[str]
    ) -> Observed:
        self._behave(inputs)
        # like a real backend, touch only the fields the engine says changed
        path = self._dir() / f"{prior.id}.json"
        data = json.loads(path.read_text()) if path.exists() else {}
        current = data.get("inputs", {})
        wanted = inputs.model_dump()
        merged = {**wanted, **current, **{k: wanted[k] for k in changed}}
        more: dict = {}
        if "next_boot" in data:  # both definitions get the changed fields
            nb = data["next_boot"]
            more["next_boot"] = {k: wanted[k] if k in changed else v for k, v in nb.items()}
            fields = type(inputs).model_fields
            restarted = any(
                field_update(fields[k]) is Disruption.RESTART and current.get(k) != wanted[k]
                for k in changed
            )
            extra = data.get("extra", {})
            more["extra"] = {**extra, "restarts": extra.get("restarts", 0) + restarted}
        return self._write(prior.id, address, type(inputs).model_validate(merged), **more)

    def delete(self, address: str, prior: Observed) -> None:
        (self._dir() / f"{prior.id}.json").unlink(missing_ok=True)

    def import_(self, address: str, id: str) -> Observed:
        f = self._dir() / f"{id}.json"
        if not f.exists():
            raise ProviderError(f"no {self.type_name} with id {id}")
        return self._observe(id, json.loads(f.read_text()))

    def list_tagged(self) -> list[TaggedObject]:
        out = []
        for f in sorted(self._dir().glob("*.json")):
            data = json.loads(f.read_text())
            out.append(
                TaggedObject(self.type_name, f.stem, data.get("stack_id"), data.get("address"))
            )
        return out


class Thing(_FakeType):
    type_name = "fake_thing"
    Inputs = ThingInputs
    attributes = ("id", "name", "echo")


class Disk(_FakeType):
    type_name = "fake_disk"
    Inputs = DiskInputs
    attributes = ("id", "name", "echo")
    replace_disruption = Disruption.DATA_LOSS

    def check(self, address: str, inputs: Inputs, prior: Observed | None) -> list[Diagnostic]:
        if prior and inputs.size_gib < prior.inputs.get("size_gib", 0):
            return [
                Diagnostic(
                    f"cannot shrink from {prior.inputs['size_gib']} to {inputs.size_gib} GiB",
                    address=address,
                    field="size_gib",
                )
            ]
        return []

    def not_in_place(self, address: str, inputs: Inputs, prior: Observed) -> dict[str, str]:
        # like a pool that grows a volume in place only within its free space
        if inputs.size_gib > GROWS_IN_PLACE_UP_TO >= prior.inputs.get("size_gib", 0):
            return {"size_gib": f"a fake disk grows in place up to {GROWS_IN_PLACE_UP_TO} GiB"}
        return {}


GROWS_IN_PLACE_UP_TO = 1000


class Leaky(_FakeType):
    """A create that makes its object and then fails without proving it removed it (like a
    server create cut off by a libvirtd restart)."""

    type_name = "fake_leaky"
    Inputs = ThingInputs
    attributes = ("id", "name", "echo")

    def create(self, address: str, inputs: Inputs) -> Observed:
        super().create(address, inputs)
        raise CleanupUnproven("the connection was lost; what was made cannot be proven removed")


class Interrupter(_FakeType):
    """With FAKE_SIGINT_ON_START=1, sends SIGINT to its own process when the apply's provider
    first asks for this type (the plan's checks asked first, with a provider of their own),
    which the scheduler does while starting a step (after its pending operation is written,
    before a worker has it): Ctrl-C landing at exactly that moment."""

    type_name = "fake_interrupter"
    Inputs = ThingInputs
    attributes = ("id", "name", "echo")
    instances = 0

    def __init__(self, provider: Provider) -> None:
        super().__init__(provider)
        Interrupter.instances += 1
        if os.environ.get("FAKE_SIGINT_ON_START") == "1" and Interrupter.instances == 2:
            os.kill(os.getpid(), signal.SIGINT)


class ServerInputs(Inputs):
    name: str = prop("server", update=Disruption.REPLACE)
    network: str | None = prop(None, update=Disruption.REPLACE)
    disk: str | None = prop(None, update=Disruption.LIVE)
    sleep: float = prop(0.0, update=Disruption.LIVE)
    console: str = prop("", update=Disruption.LIVE)  # lines its console log gets


class Server(_FakeType):
    """Server-like attributes for the dashboard's server page (addresses, power state, a
    console log file in the stack's working directory, where the libvirt provider keeps it)."""

    type_name = "fake_server"
    Inputs = ServerInputs
    attributes = ("id", "name", "echo", "addresses", "power_state", "console_log")

    def create(self, address: str, inputs: Inputs) -> Observed:
        self._behave(inputs)
        id = uuid.uuid4().hex[:12]
        log = self.provider.stack.data_dir / "console" / f"{id}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(f"booting {inputs.name}\n{inputs.console}\nlogin: ")
        n = int(id[:2], 16) % 200 + 10
        extra = {"addresses": {"lan": [f"198.18.0.{n}"]}, "power_state": "running",
                 "console_log": str(log)}  # fmt: skip
        return self._write(id, address, inputs, extra=extra)


class FakeProvider(Provider):
    name = "fake"
    Settings = FakeSettings
    resource_types = (Thing, Disk, Leaky, Interrupter, Server)
