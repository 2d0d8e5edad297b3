"""pydantic's validation errors as the loader's diagnostics: one per field, union alternatives
merged, locations cut to the steps that exist in the input, "did you mean" for unknown fields."""

from __future__ import annotations

import functools
import re
import typing
from collections.abc import Iterable, Sequence
from collections.abc import Set as AbstractSet
from typing import Any

from pydantic import BaseModel, ValidationError

from iacloud.errors import did_you_mean
from iacloud.loading.diagnostics import Sink
from iacloud.loading.values import show
from iacloud.redact import DIAGNOSTIC_MASK, Redactor

_INSTANCE_OF = re.compile(r" or instance of \w+")


def join_alternatives(messages: list[str]) -> str:
    """A union's errors as one: "input should be a valid integer or a valid number"."""
    lead = "input should be "
    if len(messages) > 1 and all(m.startswith(lead) for m in messages):
        return lead + " or ".join(m.removeprefix(lead) for m in messages)
    return " or ".join(messages)


def path_text(parts: Sequence[str | int]) -> str:
    text = ""
    for p in parts:
        text += f"[{p}]" if isinstance(p, int) else (f".{p}" if text else str(p))
    return text


def clean_loc(loc: tuple[str | int, ...], data: Any, error_type: str) -> list[str | int]:
    """A pydantic error location with union tags ('int', 'str', 'function-after[...]')
    dropped: only the steps that exist in the input survive."""
    out: list[str | int] = []
    current = data
    for i, part in enumerate(loc):
        last = i == len(loc) - 1
        in_dict = isinstance(current, dict) and part in current
        in_list = (
            isinstance(current, (list, tuple))
            and isinstance(part, int)
            and 0 <= part < len(current)
        )
        if in_dict or in_list:
            out.append(part)
            current = current[part]  # type: ignore[index]
        elif last and error_type in ("missing", "extra_forbidden"):
            out.append(part)
            current = None
    return out


def _submodels(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    origin = typing.get_origin(annotation)
    if origin is None:
        return []
    args = typing.get_args(annotation)
    if origin in (dict, typing.Mapping) or (isinstance(origin, type) and origin is dict):
        args = args[1:]
    if origin is typing.Annotated:
        args = args[:1]
    return [m for a in args for m in _submodels(a)]


def _field_names(model: type[BaseModel]) -> list[str]:
    return [info.alias or name for name, info in model.model_fields.items()]


@functools.cache
def field_set(model: type[BaseModel]) -> frozenset[str]:
    return frozenset(_field_names(model))


def fields_at(model: type[BaseModel], parts: Sequence[str | int]) -> list[str]:
    """The field names a (nested) model allows at a path: candidates for "did you mean"."""
    current: type[BaseModel] | None = model
    for part in parts:
        if current is None:
            return []
        if isinstance(part, int):
            continue
        info = current.model_fields.get(str(part))
        subs = _submodels(info.annotation) if info is not None else []
        current = subs[0] if subs else None
    return _field_names(current) if current is not None else []


def report_validation_error(
    exc: ValidationError,
    data: Any,
    model: type[BaseModel],
    sink: Sink,
    address: str,
    secrets: AbstractSet[str],
    skip_missing: Iterable[str] = (),
    file: str | None = None,
) -> None:
    """pydantic's errors as diagnostics: one per field, union alternatives merged."""
    skip = set(skip_missing)
    merged: dict[str, tuple[list[str], Any]] = {}
    for err in exc.errors(include_url=False):
        error_type = err["type"]
        parts = clean_loc(tuple(err["loc"]), data, error_type)
        where = path_text(parts)
        last = str(parts[-1]) if parts else ""
        if error_type == "missing":
            if len(parts) == 1 and last in skip:
                continue
            sink.add(f"missing required field '{last}'", address, where, file=file)
        elif error_type == "extra_forbidden":
            hint = did_you_mean(last, fields_at(model, parts[:-1]))
            sink.add(f"unknown field '{last}'", address, where, hint, file=file)
        else:
            msg = str(err["msg"])
            for prefix in ("Value error, ", "Assertion failed, "):
                msg = msg.removeprefix(prefix)
            msg = msg[:1].lower() + msg[1:]
            msg = _INSTANCE_OF.sub("", msg)  # "or instance of Constraint": not TOML's words
            if error_type == "value_error" and "found" in msg:
                sink.add(Redactor(secrets, DIAGNOSTIC_MASK).text(msg), address, where, file=file)
                continue
            msgs, _ = merged.setdefault(where, ([], err.get("input")))
            if msg not in msgs:
                msgs.append(msg)
    for where, (msgs, found) in merged.items():
        sink.add(
            f"{join_alternatives(msgs)}, found {show(found, secrets)}", address, where, file=file
        )


def validate_model(
    model: type[BaseModel],
    data: Any,
    sink: Sink,
    address: str,
    secrets: AbstractSet[str],
    skip_missing: Iterable[str] = (),
    file: str | None = None,
) -> Any:
    """model.model_validate, or None with the errors reported."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        report_validation_error(exc, data, model, sink, address, secrets, skip_missing, file)
        return None
    except Exception as exc:  # a provider's validator that raised TypeError & co.
        text = Redactor(secrets, DIAGNOSTIC_MASK).text(str(exc))
        sink.add(
            f"cannot validate: {type(exc).__name__}: {text}",
            address,
            hint=f"{model.__module__}.{model.__qualname__} should raise ValueError",
            file=file,
        )
        return None
