"""Every way an event can be refused: PayloadError, a message naming the problem, nothing written."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

from outbox import Outbox, OutboxError, OutboxReader, PayloadError

LOOP: dict[str, Any] = {}
LOOP["self"] = LOOP

BAD: list[tuple[str, object, object, str]] = [
    ("empty topic", "", {}, "topic is empty"),
    ("non-str topic", 7, {}, "topic must be a str"),
    ("None topic", None, {}, "topic must be a str"),
    ("NUL in topic", "a\x00b", {}, "unprintable character U+0000"),
    ("surrogate in topic", "a\ud800", {}, "U+D800"),
    ("over-long topic", "t" * 201, {}, "limit is 200"),
    ("list payload", "t", [1, 2], "must be a mapping, not list"),
    ("str payload", "t", "hello", "must be a mapping, not str"),
    ("None payload", "t", None, "must be a mapping, not NoneType"),
    ("unserialisable value", "t", {"a": {"b": {1, 2}}}, "$.a.b is a set"),
    ("bytes value", "t", {"blob": b"x"}, "$.blob is a bytes"),
    ("tuple key", "t", {(1, 2): 3}, "keys must be strings"),
    ("NaN", "t", {"score": float("nan")}, "nan at $.score"),
    ("Infinity", "t", {"a": [1, float("inf")]}, "inf at $.a[1]"),
    ("-Infinity", "t", {"a": {"b": float("-inf")}}, "-inf at $.a.b"),
    ("NUL in value", "t", {"name": "ab\x00c"}, "string at $.name holds a NUL"),
    ("NUL in key", "t", {"na\x00me": 1}, "holds a NUL"),
    ("NUL deep", "t", {"a": [{"b": ["\x00"]}]}, "$.a[0].b[0]"),
    ("lone high surrogate", "t", {"s": "x\ud800y"}, "lone surrogate U+D800 at index 1"),
    ("lone low surrogate", "t", {"s": "\udc00"}, "U+DC00"),
    ("surrogate in key", "t", {"\udfff": 1}, "U+DFFF"),
    ("circular", "t", LOOP, "circular"),
    ("too large", "t", {"blob": "x" * 70_000}, "limit is 65536"),
    ("too deep", "t", {"a": __import__("functools").reduce(lambda acc, _: [acc], range(5000), [])}, "nested"),
]


@pytest.mark.parametrize(("topic", "payload", "message"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
async def test_bad_input_is_refused_and_nothing_is_written(
    outbox_path: Path, topic: Any, payload: Any, message: str
) -> None:
    async with Outbox(outbox_path) as ob:
        with pytest.raises(PayloadError) as info:
            await ob.append(topic, payload)
        assert message in str(info.value)
        assert isinstance(info.value, OutboxError) and isinstance(info.value, ValueError)
        good = await ob.append("t", {"ok": True})
    async with OutboxReader(outbox_path) as reader:
        events = await reader.read_pending(10)
    assert [e.id for e in events] == [good]


async def test_max_payload_bytes_counts_utf8_bytes(outbox_path: Path) -> None:
    async with Outbox(outbox_path, max_payload_bytes=40) as ob:
        await ob.append("t", {"s": "a" * 30})  # 38 bytes
        with pytest.raises(PayloadError, match="once serialised"):
            await ob.append("t", {"s": "é" * 17})  # 25 characters, but 42 bytes of UTF-8


@pytest.mark.parametrize(
    "payload",
    [
        {"text": "back\\u0000slash"},  # an escaped backslash before "u0000" is ordinary text
        {"emoji": "😀", "cjk": "漢字", "rtl": "שלום"},
        {"big": 2**70, "neg": -(2**63), "float": 1e308, "tiny": 5e-324},
        {"nested": {"a": [None, True, False, 0, "", {}, []]}},
    ],
)
async def test_edge_values_are_accepted(outbox_path: Path, payload: dict[str, Any]) -> None:
    async with Outbox(outbox_path) as ob:
        await ob.append("t", payload)


async def test_any_mapping_is_accepted(outbox_path: Path) -> None:
    async with Outbox(outbox_path) as ob:
        await ob.append("t", MappingProxyType({"a": 1}))
        await ob.append("t", OrderedDict(b=2))
    async with OutboxReader(outbox_path) as reader:
        assert [e.payload for e in await reader.read_pending(10)] == ['{"a":1}', '{"b":2}']
