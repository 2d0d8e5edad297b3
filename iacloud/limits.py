"""Limits on what iacloud reads from users, and the bounded readers that enforce them.

Stack files, environment files, `-p` values and plan files come from anyone who can open a
pull request. Each is read as a regular file only (a FIFO would block, `/dev/zero` would never
end), up to a size limit, decoded as UTF-8, then parsed with its nesting depth and its integers
checked: Python refuses integers of over 4,300 digits with a ValueError and the TOML and JSON
parsers recurse, so both would otherwise escape as tracebacks, and deep values would reach the
loader's own recursive helpers. Every violation is an `InputError` whose message the caller
turns into an ordinary diagnostic naming the file.
"""

from __future__ import annotations

import json
import math
import os
import stat
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

MAX_TOML_BYTES = 16 << 20  # a stack of 100,000 resources is about 2 MiB
MAX_PLAN_BYTES = 256 << 20  # a saved plan of 100,000 resources
MAX_DEPTH = 64  # nested tables/arrays: stacks need a handful
MAX_INT = 2**63 - 1  # integers as TOML defines them (64-bit signed)
MAX_NUMBER_CHARS = 40  # a number written in a JSON plan or a -p value
# resource instances in one stack (counts included): the scale bench/plan_scale.py measures;
# loading that many takes about 1.3 s here
MAX_RESOURCES = 100_000
# dependencies summed over every instance: a whole-group reference from a counted resource
# gives each instance the whole group, and plans, state and apply's step graph hold each
# instance's list (apply's graph: about 250 MB per million). 1,000 instances on a group of
# 1,000 fit; 10,000 on 10,000 (100 million) would take tens of gigabytes.
MAX_DEPENDENCIES = 1_000_000


class InputError(ValueError):
    """Input beyond a limit or unreadable; the message is meant for the user as it is."""


def describe_kind(mode: int) -> str:
    for test, kind in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return kind
    return "not a regular file"


def read_text(path: Path, max_bytes: int = MAX_TOML_BYTES) -> str:
    """The file's text. FileNotFoundError passes through (callers word it); anything else that
    is wrong becomes an InputError."""
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; the type is checked next
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise InputError(f"cannot read the file: {exc.strerror or exc}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise InputError(f"cannot read the file: it is {describe_kind(info.st_mode)}")
        if info.st_size > max_bytes:
            raise InputError(
                f"the file is {info.st_size} bytes, more than the limit of {max_bytes}"
            )
        chunks: list[bytes] = []
        size = 0
        while size <= max_bytes:  # the file may grow after fstat: read one byte past the limit
            chunk = os.read(fd, min(1 << 20, max_bytes + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > max_bytes:
            raise InputError(f"the file is more than the limit of {max_bytes} bytes")
    except OSError as exc:
        raise InputError(f"cannot read the file: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise InputError(f"not a UTF-8 text file (byte {exc.start}, line {line})") from None


def check_value(value: Any, max_depth: int = MAX_DEPTH) -> None:
    """Walk a parsed value without recursion: its depth and its integers within the limits."""
    todo: list[tuple[Any, int]] = [(value, 0)]
    while todo:
        item, depth = todo.pop()
        if isinstance(item, dict):
            if depth >= max_depth:
                raise InputError(f"values are nested more than {max_depth} levels deep")
            todo.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            if depth >= max_depth:
                raise InputError(f"values are nested more than {max_depth} levels deep")
            todo.extend((v, depth + 1) for v in item)
        elif isinstance(item, int) and not isinstance(item, bool) and abs(item) > MAX_INT:
            raise InputError(f"an integer is beyond the 64-bit range (±{MAX_INT})")


def _parsed(parse: Callable[[], Any], syntax_error: type[ValueError]) -> Any:
    try:
        value = parse()
    except RecursionError:
        raise InputError(f"values are nested more than {MAX_DEPTH} levels deep") from None
    except syntax_error:
        raise
    except InputError:
        raise
    except ValueError:  # the only other one the parsers raise: int/str conversion's digit limit
        raise InputError(f"an integer is beyond the 64-bit range (±{MAX_INT})") from None
    check_value(value)
    return value


def parse_toml(text: str) -> dict[str, Any]:
    """tomllib.loads within the limits; TOMLDecodeError passes through for the caller's wording."""
    return _parsed(lambda: tomllib.loads(text), tomllib.TOMLDecodeError)


def _json_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_NUMBER_CHARS:
        raise InputError(f"a number is longer than {MAX_NUMBER_CHARS} digits")
    return int(text)


def _json_float(text: str) -> float:
    if len(text) > 2 * MAX_NUMBER_CHARS:
        raise InputError(f"a number is longer than {2 * MAX_NUMBER_CHARS} characters")
    value = float(text)
    if math.isinf(value):
        raise InputError(f"the number {text} is out of range")
    return value


def _json_constant(name: str) -> Any:
    raise InputError(f"{name} is not a JSON value")


def parse_json(text: str) -> Any:
    """json.loads within the limits (and without NaN/Infinity, which JSON does not have);
    JSONDecodeError passes through."""
    return _parsed(
        lambda: json.loads(
            text, parse_int=_json_int, parse_float=_json_float, parse_constant=_json_constant
        ),
        json.JSONDecodeError,
    )


__all__ = [
    "MAX_DEPTH",
    "MAX_PLAN_BYTES",
    "MAX_TOML_BYTES",
    "InputError",
    "check_value",
    "parse_json",
    "parse_toml",
    "read_text",
]
