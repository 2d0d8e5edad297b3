"""Copy one stack's whole state history between backends (`iacloud state push` / `pull`),
refusing to overwrite a different lineage, a newer state or a history that went its own way."""

from __future__ import annotations

from dataclasses import dataclass

from iacloud.state import StateBackend, StateError
from iacloud.state.model import StackHistory


@dataclass(frozen=True)
class CopyResult:
    stack: str
    serial: int  # the serial both sides now have
    versions: int  # versions copied (the destination had the others already)
    up_to_date: bool  # the destination already had it all: nothing was written


def _stamp(h: StackHistory) -> list[tuple[int, str, str]]:
    return [(v.version.serial, v.version.command, v.version.created_at.isoformat())
            for v in h.versions]  # fmt: skip


def check_copy(source: StackHistory, dest: StackHistory | None, src: str, dst: str) -> None:
    """Raise StateError unless `dest` is empty or an earlier point of `source`'s history."""
    if dest is None:
        return
    name = source.stack
    if (dest.stack_id, dest.lineage) != (source.stack_id, source.lineage):
        raise StateError(
            f"stack '{name}' in {dst} has a different lineage ({dest.lineage}, stack_id "
            f"{dest.stack_id}) from {src} ({source.lineage}, stack_id {source.stack_id}): "
            "they are two different states, and copying would lose one. Nothing was changed"
        )
    if dest.serial > source.serial:
        raise StateError(
            f"stack '{name}' in {dst} is newer (serial {dest.serial}) than in {src} "
            f"(serial {source.serial}); copy the other way. Nothing was changed"
        )
    mine, theirs = _stamp(source), _stamp(dest)
    if theirs != mine[: len(theirs)]:
        raise StateError(
            f"stack '{name}': the histories in {src} and {dst} went their own ways after a "
            "common start (versions with the same serial differ). Nothing was changed"
        )


def copy_stack(
    source: StateBackend,
    dest: StateBackend,
    stack: str,
    src: str,
    dst: str,
    lock_timeout: float = 0.0,
) -> CopyResult:
    """Copy `stack` from `source` to `dest` under both stacks' locks. `src`/`dst` name the two
    stores in messages (URLs with passwords masked)."""
    with (
        source.locked(stack, "state copy", lock_timeout),
        dest.locked(stack, "state copy", lock_timeout),
    ):
        history = source.export_history(stack)
        if history is None:
            raise StateError(f"stack '{stack}' has no state in {src}; nothing to copy")
        current = dest.export_history(stack)
        check_copy(history, current, src, dst)
        have = 0 if current is None else len(current.versions)
        if current is not None and have == len(history.versions) and current == history:
            return CopyResult(stack, history.serial, 0, True)
        dest.import_history(history)
        copied = dest.export_history(stack)
        if copied != history:  # read back: what landed is what was read, row for row
            raise StateError(f"stack '{stack}': the copy in {dst} differs from {src}")
        return CopyResult(stack, history.serial, len(history.versions) - have, False)
