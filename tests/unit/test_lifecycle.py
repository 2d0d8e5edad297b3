"""Lifecycle rules per resource (prevent_destroy, ignore_changes, create_before_destroy,
deletion_policy = "retain") through the engine and the CLI, with the fake provider."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from iacloud import engine
from iacloud.engine import Action, PlanOptions, UserError


def errors_of(exc: UserError) -> str:
    return "\n".join(str(d) for d in exc.diagnostics)


def test_validate_names_file_resource_field_and_suggests(write_stack):
    path = write_stack(
        """
version = 1
name = "lc"
[resources.a]
type = "fake_disk"
size_gib = 1
lifecycle = { prevent_destroy = true, ignore_change = ["size_gib"] }
deletion_policy = "retian"
[resources.b]
type = "fake_disk"
size_gib = 1
lifecycle = { ignore_changes = ["size_gb"] }
[resources.c]
type = "fake_disk"
size_gib = 1
lifecycel = { prevent_destroy = true }
"""
    )
    with pytest.raises(UserError) as info:
        engine.Workspace(path).load()
    text = errors_of(info.value)
    assert str(path) in text
    assert "resources.a" in text and "ignore_change" in text and "ignore_changes" in text
    assert "deletion_policy" in text and "retain" in text
    assert "resources.b" in text and "lifecycle.ignore_changes[0]" in text
    assert "'size_gb' is not a field of type 'fake_disk'" in text and "size_gib" in text
    assert "resources.c" in text and "lifecycel" in text and "did you mean 'lifecycle'" in text


def test_validate_refuses_create_before_destroy_where_it_can_never_work(write_stack):
    path = write_stack(
        """
version = 1
name = "lc"
[resources.web]
type = "server"
image = "p/img.qcow2"
lifecycle = { create_before_destroy = true }
[resources.data]
type = "volume"
size_gib = 1
lifecycle = { create_before_destroy = true }
"""
    )
    with pytest.raises(UserError) as info:
        engine.Workspace(path).load()
    (d,) = info.value.diagnostics
    assert d.address == "resources.web" and d.field == "lifecycle.create_before_destroy"
    assert "libvirt domain name" in d.message  # a volume can (when its format changes)


def test_rules_reach_the_configuration(write_stack):
    path = write_stack(
        """
version = 1
name = "lc"
[resources.a]
type = "fake_disk"
size_gib = 1
count = 2
lifecycle = { prevent_destroy = true, ignore_changes = ["size_gib"] }
deletion_policy = "retain"
[resources.b]
type = "fake_disk"
size_gib = 1
"""
    )
    config = engine.Workspace(path).load()
    rules = config.resources["a[1]"].lifecycle
    assert rules is not None and rules.prevent_destroy and rules.retain
    assert rules.ignore_changes == ["size_gib"]
    assert config.resources["b"].lifecycle is None


def stack(disk: str = "", thing: str = "", extra: str = "") -> str:
    return f"""
version = 1
name = "lc"
[resources.disk]
type = "fake_disk"
size_gib = 1
{disk}
[resources.thing]
type = "fake_thing"
ref = {{ get_resource = "disk" }}
{thing}
{extra}
"""


def objects(data_dir: Path, type_name: str) -> dict[str, dict]:
    return {f.stem: json.loads(f.read_text()) for f in data_dir.rglob(f"fake/{type_name}/*.json")}


def apply_text(ws: engine.Workspace, text: str | None = None, **options) -> engine.ApplyResult:
    if text is not None:
        ws.stack_file.write_text(text)
    plan, _ = engine.make_plan(ws, ws.load(), PlanOptions(**options))
    result = engine.apply(ws, plan)
    assert result is not None
    return result


class Recorder(engine.Reporter):
    def __init__(self) -> None:
        self.started: list[str] = []

    def step_started(self, step) -> None:
        self.started.append(f"{step.kind} {step.change.address}")


PROTECTED = "lifecycle = { prevent_destroy = true }"


@pytest.fixture(params=["sqlite", "postgresql"])
def state_url(request, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "state.db")
    return request.getfixturevalue("pg_server").fresh_url()


@pytest.fixture
def protected(write_stack, state_url) -> engine.Workspace:
    ws = engine.Workspace(write_stack(stack(disk=PROTECTED)), state_url)
    assert apply_text(ws).ok
    return ws


def refused(ws: engine.Workspace, *, why: str, **options) -> None:
    serial = ws.backend.snapshot("lc").serial
    with pytest.raises(UserError) as info:
        engine.make_plan(ws, ws.load(), PlanOptions(**options))
    text = errors_of(info.value)
    assert "resources.disk" in text and "lifecycle.prevent_destroy" in text, text
    assert "prevent_destroy is set" in text and why in text, text
    assert ws.backend.snapshot("lc").serial == serial


def test_prevent_destroy_refuses_destroy_replace_and_removal(protected, data_dir):
    ws = protected
    before = objects(data_dir, "fake_disk")
    refused(ws, why="delete it (destroy)", destroy=True)
    refused(ws, why="replacement requested with --replace", replace=["disk"])
    ws.stack_file.write_text(stack(disk=PROTECTED + '\nsource = "new"'))
    refused(ws, why="changing source forces replacement")
    ws.stack_file.write_text(stack(disk=PROTECTED).replace("[resources.disk]", "[resources.d2]"))
    ws.stack_file.write_text('version = 1\nname = "lc"\n[resources.thing]\ntype = "fake_thing"\n')
    refused(ws, why="not in the stack any more")
    assert objects(data_dir, "fake_disk") == before
    # an unprotected resource beside it is not held back by it
    ws.stack_file.write_text(stack(disk=PROTECTED, thing='name = "other"'))
    assert apply_text(ws).ok


def test_prevent_destroy_cli_exit_code_1_names_the_resource(protected, run):
    state = ("--state", protected.state_url) if protected.state_url else ()
    out = run("destroy", str(protected.stack_file), "--auto-approve", *state, code=1)
    assert "resources.disk" in out and "prevent_destroy" in out
    out = run("apply", str(protected.stack_file), "--replace", "disk", "--auto-approve", *state,
              code=1)  # fmt: skip
    assert "replacement requested" in out
    assert set(protected.backend.snapshot("lc").resources) == {"disk", "thing"}


def test_prevent_destroy_lifted_in_the_stack_is_recorded_then_removal_works(protected, data_dir):
    ws = protected
    ws.stack_file.write_text(stack())
    plan, _ = engine.make_plan(ws, ws.load(), PlanOptions())
    assert not plan.actionable() and [u.reason for u in plan.state_updates] == [
        "lifecycle rules recorded"
    ]
    assert engine.apply(ws, plan).ok
    assert ws.backend.snapshot("lc").resources["disk"].lifecycle is None
    ws.stack_file.write_text('version = 1\nname = "lc"\n')
    assert apply_text(ws).ok
    assert objects(data_dir, "fake_disk") == {}


def test_ignore_changes_plans_neither_stack_edits_nor_drift(write_stack, data_dir):
    rules = 'lifecycle = { ignore_changes = ["size_gib"] }'
    ws = engine.Workspace(write_stack(stack(disk=rules)))
    assert apply_text(ws).ok
    # a stack edit of the field: no change
    ws.stack_file.write_text(stack(disk=rules).replace("size_gib = 1", "size_gib = 5"))
    plan, _ = engine.make_plan(ws, ws.load(), PlanOptions())
    assert not plan.has_changes, plan.actionable()
    # drift of the field: no change, and drift reports it as suppressed
    ((id_, data),) = objects(data_dir, "fake_disk").items()
    path = next(data_dir.rglob(f"fake/fake_disk/{id_}.json"))
    data["inputs"]["size_gib"] = 7
    path.write_text(json.dumps(data))
    plan, _ = engine.make_plan(ws, ws.load(), PlanOptions())
    assert not plan.has_changes, (plan.actionable(), plan.state_updates)
    report = engine.drift(ws, ws.load())
    (disk,) = [r for r in report.resources if r.address == "disk"]
    assert [(d.attribute, d.suppressed) for d in disk.differences] == [("size_gib", True)]
    assert not report.drifted
    # other fields still plan: a replace-forcing edit replaces, keeping the ignored value
    ws.stack_file.write_text(stack(disk=rules + '\nsource = "s"'))
    plan, _ = engine.make_plan(ws, ws.load(), PlanOptions())
    (change,) = [c for c in plan.actionable() if c.address == "disk"]
    assert change.action is Action.DELETE_CREATE and change.after["size_gib"] == 7
    # without the rule, the field is planned again
    ws.stack_file.write_text(stack().replace("size_gib = 1", "size_gib = 9"))
    plan, _ = engine.make_plan(ws, ws.load(), PlanOptions())
    (change,) = [c for c in plan.actionable() if c.address == "disk"]
    assert change.action is Action.UPDATE and [f.field for f in change.fields] == ["size_gib"]


def test_create_before_destroy_creates_the_new_object_first(write_stack, data_dir):
    rules = "lifecycle = { create_before_destroy = true }"
    ws = engine.Workspace(write_stack(stack(disk=rules, thing=rules)))
    assert apply_text(ws).ok
    old = set(objects(data_dir, "fake_disk"))
    ws.stack_file.write_text(stack(disk=rules + '\nsource = "s2"', thing=rules))
    plan, _ = engine.make_plan(ws, ws.load(), PlanOptions())
    (change,) = [c for c in plan.actionable() if c.address == "disk"]
    assert change.action is Action.CREATE_DELETE
    recorder = Recorder()
    assert engine.apply(ws, plan, reporter=recorder, jobs=1).ok
    started = recorder.started
    assert started.index("create disk") < started.index("delete disk"), started
    # the thing that refers to the disk (create-before-destroy too) moves over in between
    assert (
        started.index("create disk") < started.index("create thing") < started.index("delete disk")
    ), started
    new = set(objects(data_dir, "fake_disk"))
    assert len(new) == 1 and new.isdisjoint(old)
    assert ws.backend.snapshot("lc").resources["disk"].id in new


def test_create_before_destroy_old_object_goes_after_users_moved_off_it(write_stack, data_dir):
    rules = "lifecycle = { create_before_destroy = true }"
    text = stack(disk=rules).replace(
        'ref = { get_resource = "disk" }', 'refs = [{ get_resource = "disk" }]'
    )
    ws = engine.Workspace(write_stack(text))
    assert apply_text(ws).ok
    ws.stack_file.write_text(text.replace("size_gib = 1", 'size_gib = 1\nsource = "s2"'))
    plan, _ = engine.make_plan(ws, ws.load(), PlanOptions())
    assert {c.address: c.action for c in plan.actionable()} == {
        "disk": Action.CREATE_DELETE,
        "thing": Action.UPDATE,  # refs changes in place
    }
    recorder = Recorder()
    assert engine.apply(ws, plan, reporter=recorder, jobs=4).ok
    assert recorder.started == ["create disk", "update thing", "delete disk"]
    snap = ws.backend.snapshot("lc")
    assert snap.resources["thing"].inputs["refs"] == [snap.resources["disk"].id]


def test_create_before_destroy_refused_where_names_collide(write_stack, monkeypatch):
    import fake_provider

    from iacloud.provider import Collision

    monkeypatch.setattr(
        fake_provider.Disk,
        "replace_collisions",
        (Collision("disk name (stack id and address)", unless=("source",)),),
    )
    rules = "lifecycle = { create_before_destroy = true }"
    ws = engine.Workspace(write_stack(stack(disk=rules)))
    assert apply_text(ws).ok
    with pytest.raises(UserError) as info:
        engine.make_plan(ws, ws.load(), PlanOptions(replace=["disk"]))
    text = errors_of(info.value)
    assert "resources.disk" in text and "lifecycle.create_before_destroy" in text
    assert "disk name (stack id and address)" in text and "change source" in text
    # a change of the field that tells old and new apart makes it possible
    ws.stack_file.write_text(stack(disk=rules + '\nsource = "s2"'))
    plan, _ = engine.make_plan(ws, ws.load(), PlanOptions())
    assert [c.action for c in plan.actionable() if c.address == "disk"] == [Action.CREATE_DELETE]


RETAIN = 'deletion_policy = "retain"'


def test_retain_forgets_a_removed_resource_and_leaves_the_object(
    write_stack, data_dir, run, state_url
):
    ws = engine.Workspace(write_stack(stack(disk=RETAIN)), state_url)
    assert apply_text(ws).ok
    disk_id = ws.backend.snapshot("lc").resources["disk"].id
    ws.stack_file.write_text('version = 1\nname = "lc"\n[resources.thing]\ntype = "fake_thing"\n')
    out = run("plan", str(ws.stack_file), "--state", state_url)
    assert "forget (retained)" in out and "disk" in out
    plan, _ = engine.make_plan(ws, ws.load(), PlanOptions())
    assert all(c.address != "disk" for c in plan.actionable())
    (update,) = plan.state_updates
    assert update.retained and update.action == "forget" and update.address == "disk"
    assert apply_text(ws).ok
    assert "disk" not in ws.backend.snapshot("lc").resources
    assert disk_id in objects(data_dir, "fake_disk")


def test_retain_on_destroy_and_with_prevent_destroy(write_stack, data_dir, run):
    ws = engine.Workspace(write_stack(stack(disk=RETAIN + "\n" + PROTECTED)))
    assert apply_text(ws).ok
    disk_id = ws.backend.snapshot("lc").resources["disk"].id
    out = run("destroy", str(ws.stack_file), "--auto-approve")
    assert "forget (retained)" in out or "retained" in out
    assert ws.backend.snapshot("lc").resources == {}
    assert set(objects(data_dir, "fake_disk")) == {disk_id}
    assert objects(data_dir, "fake_thing") == {}


def test_state_rows_without_rules_are_stored_as_before_rules_existed(write_stack, tmp_path):
    import sqlite3

    ws = engine.Workspace(write_stack(stack(disk=PROTECTED)), str(tmp_path / "s.db"))
    assert apply_text(ws).ok
    with sqlite3.connect(tmp_path / "s.db") as db:
        rows = dict(db.execute("SELECT address, data FROM resources WHERE serial_to IS NULL"))
    # an older iacloud (which forbids unknown keys) still reads 'thing'
    assert "lifecycle" not in json.loads(rows["thing"])
    assert json.loads(rows["disk"])["lifecycle"]["prevent_destroy"] is True
