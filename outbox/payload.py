"""Validate and serialise an event before it touches the disk.

The rule: whatever the outbox accepts, Postgres ``jsonb`` accepts too. Python's ``json`` writes
three things ``jsonb`` refuses -- NaN/Infinity, ``\\u0000`` and lone surrogates -- so each is
caught here, with a path to where it sits. The fast path is one C-encoder call plus two O(1)
string checks; the slow walk that names the exact location runs only when something is wrong.
"""

from __future__ import annotations

import json
import json.encoder
import math
import re
import sys
import threading
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from .errors import PayloadError

__all__ = ["encode_payload", "compact_json", "check_topic", "payload_problem", "MAX_TOPIC_LENGTH", "MAX_DEPTH"]

MAX_TOPIC_LENGTH = 200

_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def _c_encoder() -> Callable[[Any, int], list[str]] | None:
    """Return ``_ENCODER``'s C encoder, built once instead of on every ``encode`` call.

    ``JSONEncoder.encode`` builds a fresh C encoder per call, which is ~40% of encoding a
    200-byte event. This one keeps no circular-reference markers (a shared marker dict would
    be unsafe across threads and could keep stale entries after an error): a circular payload
    ends in ``RecursionError`` instead of ``ValueError``, and both lead to the same walk that
    names the loop. ``None`` where the C accelerator is missing or does not match.
    """
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return None
    try:
        encoder: Callable[[Any, int], list[str]] = make(
            None, _ENCODER.default, json.encoder.encode_basestring, None, ":", ",", False, False, False
        )
        sample = {"a": [1, 2.5, None, True], "é": {"b": "x\ny"}, "n": 10**20}
        if "".join(encoder(sample, 0)) != _ENCODER.encode(sample):
            return None
    except Exception:  # a future signature change: fall back to the public API
        return None
    return encoder


_C_ENCODE = _c_encoder()

# ``\u0000`` in the encoded text that is not itself an escaped backslash followed by "u0000".
_NUL_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")
_good_topics: set[str] = set()


def check_topic(topic: object) -> str:
    """Return ``topic`` if it is a usable topic name, else raise :class:`PayloadError`."""
    if topic in _good_topics:
        return topic  # type: ignore[return-value]
    if not isinstance(topic, str):
        raise PayloadError(f"topic must be a str, not {type(topic).__name__}")
    if not topic:
        raise PayloadError("topic is empty")
    if len(topic) > MAX_TOPIC_LENGTH:
        raise PayloadError(f"topic is {len(topic)} characters long; the limit is {MAX_TOPIC_LENGTH}")
    if not topic.isprintable():
        bad = next(ch for ch in topic if not ch.isprintable())
        raise PayloadError(f"topic {topic!r} holds the unprintable character U+{ord(bad):04X}")
    if len(_good_topics) < 10_000:
        _good_topics.add(topic)
    return topic


def encode_payload(payload: object, max_bytes: int) -> tuple[str, int]:
    """Return ``(json_text, utf8_size)`` for ``payload`` or raise :class:`PayloadError`."""
    if type(payload) is dict:  # checked first: isinstance against an ABC costs ~0.1 us
        obj = payload
    elif isinstance(payload, Mapping):
        obj = dict(payload)
    else:
        raise PayloadError(f"payload must be a mapping, not {type(payload).__name__}")
    try:
        text: str = "".join(_C_ENCODE(obj, 0)) if _C_ENCODE is not None else _ENCODER.encode(obj)
    except RecursionError:
        # Too deep for the stack left: the payload's nesting, a loop, or the caller's own deep
        # stack. The limit is checked here, not left to the encoder (3.13's no longer raises).
        problem = _in_fresh_stack(_explain, obj, None)
        if problem != _NOTHING_WRONG:
            raise PayloadError(problem) from None
        text = _in_fresh_stack(compact_json, obj)  # a sound payload, a deep caller
    except (TypeError, ValueError) as exc:
        raise PayloadError(_in_fresh_stack(_explain, obj, exc)) from None
    # Each level of nesting takes two brackets: a short payload cannot be too deep (an ordinary
    # event pays one length test), a longer one is counted at C speed (~0.2 us per 200 bytes),
    # and only a bracket-heavy one is walked.
    if (
        len(text) > 2 * MAX_DEPTH
        and text.count("[") + text.count("{") > MAX_DEPTH
        and (deep := _too_deep(obj))
    ):
        raise PayloadError(deep)
    if "\\u0000" in text and _NUL_ESCAPE.search(text):
        raise PayloadError(_in_fresh_stack(_explain, obj, None))
    if text.isascii():
        size = len(text)
    else:
        try:
            size = len(text.encode("utf-8"))
        except UnicodeEncodeError:
            raise PayloadError(_in_fresh_stack(_explain, obj, None)) from None
    if size > max_bytes:
        raise PayloadError(
            f"payload is {size} bytes once serialised; the limit is {max_bytes} (max_payload_bytes)"
        )
    return text, size


def compact_json(value: Any) -> str:
    """Serialise ``value`` as the outbox does (compact, UTF-8 kept), with no checks.

    For values that came out of an outbox payload (``json.loads`` of one), so already valid
    for Postgres; about 5x faster than ``json.dumps`` with the same settings.
    """
    return "".join(_C_ENCODE(value, 0)) if _C_ENCODE is not None else _ENCODER.encode(value)


def payload_problem(value: Any) -> str | None:
    """What :func:`encode_payload` would refuse in an already-decoded ``value``, and where; None
    if nothing. For a reader of a file written by other means than ``append`` (an older version,
    sqlite3 by hand): ``{"s":"\\ud800"}`` decodes to a lone surrogate that no UTF-8 text holds."""
    return _in_fresh_stack(_find, value, "$", set(), 0)


_NOTHING_WRONG = "payload is not JSON-serialisable"
_R = TypeVar("_R")


def _in_fresh_stack(call: Callable[..., _R], *args: Any) -> _R:
    """Run ``call`` with room for ``MAX_DEPTH`` levels however deep the caller already is.

    Only on the error path: the caller of ``append`` may itself sit deep in recursion, and a
    payload within the limit must be judged the same from anywhere. The limit is raised for
    the call (under a lock, so two threads cannot leave it raised) rather than the call moved
    to a thread: starting a thread needs stack too.
    """
    with _HEADROOM:
        limit = sys.getrecursionlimit()
        sys.setrecursionlimit(limit + 3 * MAX_DEPTH)
        try:
            return call(*args)
        finally:
            sys.setrecursionlimit(limit)


_HEADROOM = threading.RLock()


def _explain(obj: Any, exc: BaseException | None) -> str:
    """Walk ``obj`` to name the first value Postgres ``jsonb`` would refuse, and where it is."""
    found = _find(obj, "$", set(), 0)
    if found:
        return found
    return f"{_NOTHING_WRONG}: {exc}" if exc else _NOTHING_WRONG


MAX_DEPTH = 500  # containers inside containers: far past any real event, well inside every decoder


def _too_deep(obj: Any) -> str | None:
    """Name where ``obj`` nests more than ``MAX_DEPTH`` containers deep; None if it does not.

    Iterative, so it needs no stack of its own and stops at the first level past the limit
    (a circular payload would be reported as too deep; only a payload that encoded gets here).
    """
    stack: list[tuple[Any, int, str]] = [(obj, 1, "$")]
    while stack:
        value, depth, path = stack.pop()
        if depth > MAX_DEPTH:
            return f"payload is nested more than {MAX_DEPTH} levels deep at {path[:200]}"
        if isinstance(value, dict):
            items: Any = value.items()
        elif isinstance(value, (list, tuple)):
            items = enumerate(value)
        else:
            continue
        for key, item in items:
            if isinstance(item, (dict, list, tuple)):
                step = f"[{key}]" if isinstance(value, (list, tuple)) else f".{key}"
                stack.append((item, depth + 1, path + step if len(path) < 200 else path))
    return None


def _find(value: Any, path: str, seen: set[int], depth: int) -> str | None:
    if depth > MAX_DEPTH:
        return f"payload is nested more than {MAX_DEPTH} levels deep at {path}"
    if isinstance(value, str):
        return _bad_str(value, f"string at {path}")
    if value is None or isinstance(value, (bool, int)):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{value!r} at {path} is not valid JSON for Postgres"
    if isinstance(value, (dict, list, tuple)):
        if id(value) in seen:
            return f"payload refers to itself (circular reference) at {path}"
        seen.add(id(value))
        try:
            if isinstance(value, dict):
                for key, item in value.items():
                    if not isinstance(key, (str, int, float, bool)) and key is not None:
                        return f"key {key!r} at {path} is a {type(key).__name__}; keys must be strings"
                    if isinstance(key, float) and not math.isfinite(key):
                        return f"key {key!r} at {path} is not valid JSON for Postgres"
                    if isinstance(key, str) and (problem := _bad_str(key, f"key {key!r} at {path}")):
                        return problem
                    if problem := _find(item, f"{path}.{key}", seen, depth + 1):
                        return problem
            else:
                for index, item in enumerate(value):
                    if problem := _find(item, f"{path}[{index}]", seen, depth + 1):
                        return problem
        finally:
            seen.discard(id(value))
        return None
    return f"value at {path} is a {type(value).__name__}, which is not JSON-serialisable"


def _bad_str(text: str, where: str) -> str | None:
    if "\x00" in text:
        return f"{where} holds a NUL character (\\u0000), which Postgres text cannot store"
    for index, ch in enumerate(text):
        if "\ud800" <= ch <= "\udfff":
            return f"{where} holds a lone surrogate U+{ord(ch):04X} at index {index}"
    return None
