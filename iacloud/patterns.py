"""Heat's `allowed_pattern`, evaluated in time linear in the value's length.

Heat checks `re.match(pattern, value)` and accepts when that match ends at the end of the value
(anchored at the start, the first match by Python's priority rules, then "did it cover it all").
Python's backtracking engine takes exponential time on patterns such as `(a+)+$` (36 s on a
28-character value), and a stack file from a pull request picks both the pattern and the value.
RE2 (google-re2) is a linear-time engine with the same leftmost-first match semantics for the
syntax both share, so `match(...).end() == len(value)` keeps Heat's meaning. What RE2 cannot do
in linear time (backreferences, lookaround) is refused when the stack is validated. One known
difference: RE2's `\\w`, `\\d` and `\\s` are ASCII-only, Python's also match other scripts.
"""

from __future__ import annotations

import functools

import re2

# RE2 builds its automaton within this budget and refuses a larger pattern instead of growing
_MAX_MEMORY = 8 << 20


class PatternError(ValueError):
    """A pattern that cannot be used; the message says why."""


@functools.cache
def _options() -> re2.Options:
    options = re2.Options()
    options.log_errors = False  # the error comes back as an exception; no text on stderr
    options.max_mem = _MAX_MEMORY
    return options


@functools.lru_cache(maxsize=256)
def compile_pattern(pattern: str) -> re2._Regexp:
    """The compiled pattern, or PatternError naming what is wrong with it."""
    try:
        return re2.compile(pattern, _options())
    except re2.error as exc:
        detail = exc.args[0] if exc.args else exc
        if isinstance(detail, bytes):
            detail = detail.decode("utf-8", "replace")
        raise PatternError(
            f"invalid regular expression: {detail} (patterns are RE2 syntax: no backreferences "
            "or lookaround)"
        ) from None
    except (TypeError, ValueError) as exc:  # a NUL or surrogate the engine cannot take
        raise PatternError(f"invalid regular expression: {exc}") from None


def matches(pattern: str, value: str) -> bool:
    """Heat's allowed_pattern check: a match anchored at the start that covers the value."""
    try:
        match = compile_pattern(pattern).match(value)
    except (TypeError, ValueError):  # a value the engine cannot encode (a lone surrogate)
        return False
    return match is not None and match.end() == len(value)
