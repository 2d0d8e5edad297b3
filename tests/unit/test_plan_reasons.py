"""Why a change has its action: reason codes for code and JSON, the text derived from them."""

from __future__ import annotations

import json

from iacloud.plan import Action, Change, Reason, ReasonCode


def _change(*why: Reason) -> Change:
    return Change(address="web", type="server", provider="libvirt", action=Action.DELETE_CREATE,
                  why=list(why))  # fmt: skip


def test_text_is_derived_from_the_code_and_its_details() -> None:
    change = _change(
        Reason(code=ReasonCode.FORCES_REPLACEMENT, fields=["image", "user_data"]),
        Reason(code=ReasonCode.LEFT_BY_INTERRUPTED, ids=["pool/a", "pool/b"], step="create"),
    )
    assert change.reasons == [
        "changing image, user_data forces replacement",
        "left by an interrupted create: pool/a, pool/b (found by its ownership tag)",
    ]


def test_every_code_reads_as_its_own_sentence() -> None:
    texts = {
        Reason(code=code, fields=["memory_mib"], ids=["x"], step="delete").text
        for code in ReasonCode
        if code is not ReasonCode.OTHER
    }
    assert len(texts) == len(ReasonCode) - 1 and all(texts)


def test_saved_plan_round_trips_with_codes_and_text() -> None:
    change = _change(Reason(code=ReasonCode.REPLACE_REQUESTED))
    data = json.loads(change.model_dump_json())
    assert data["why"][0]["code"] == "replace_requested"
    assert data["reasons"] == ["replacement requested with --replace"]
    assert Change.model_validate(data) == change


def test_plan_saved_before_reason_codes_keeps_its_text() -> None:
    old = {"address": "web", "type": "server", "provider": "libvirt", "action": "delete",
           "reasons": ["destroy requested"]}  # fmt: skip
    change = Change.model_validate(old)
    assert [r.code for r in change.why] == [ReasonCode.OTHER]
    assert change.reasons == ["destroy requested"]
