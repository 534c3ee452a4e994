"""The whole-batch encoder (shipper.columnar) writes exactly what the per-event encoder writes.

A route's batch goes column by column when it is uniform; any batch it declines goes event by
event. Whichever path a batch takes, the COPY text and the events it covers must be the same,
byte for byte, with each decoder (msgspec, orjson, the standard one: tests/decoders.py).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import shipper.copyrows as copyrows
import shipper.routes as routes
from decoders import DECODERS, using
from outbox import Event
from shipper.routes import Column, Router, TableSpec
from test_typed_rows import typed_path

COLUMNS = [
    Column("id", "uuid", True),
    Column("n", "bigint"),
    Column("x", "double precision"),
    Column("amount", "numeric"),
    Column("s", "text"),
    Column("detail", "jsonb"),
    Column("tags", "text[]", is_array=True),
    Column("flag", "boolean"),
    Column("d", "text", has_default=True),
    Column("payload", "jsonb"),
    Column("created_at", "timestamp with time zone", True),
]
KEYS = ["n", "x", "amount", "s", "detail", "tags", "flag"]

# Strings with what COPY's text format and JSON escape (tab, newline, backslash, quote), and
# characters they do not (non-ASCII, U+2028, DEL).
texts = st.text(alphabet=st.sampled_from(list("ab \t\n\r\\\"é\u2028\x7f{}[],:") + ["\U0001f600"]), max_size=6)
ints = st.integers(-(2**70), 2**70) | st.sampled_from([2**63 - 1, -(2**63), 2**64 - 1, 2**64, -(2**63) - 1])
floats = st.floats(allow_nan=False, allow_infinity=False)
scalars = st.none() | st.booleans() | ints | floats | texts
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3), max_leaves=6)
# Mostly each key's own type, sometimes anything: a batch with an odd value stays column by column.
by_key = {
    "n": ints, "x": floats, "amount": ints | floats, "s": texts, "flag": st.booleans(),
    "detail": st.dictionaries(texts, json_values, max_size=3) | st.lists(json_values, max_size=3),
    "tags": st.lists(texts | st.none(), max_size=3),
}


@st.composite
def batches(draw: st.DrawFn) -> tuple[list[str], list[dict[str, Any]], list[int]]:
    keys = draw(st.lists(st.sampled_from(KEYS), unique=True, max_size=len(KEYS)))
    odd = draw(st.booleans())
    n = draw(st.integers(1, 40))
    rows = []
    for _ in range(n):
        rows.append({k: draw(scalars if odd and draw(st.integers(0, 9)) == 0 else by_key[k]) for k in keys})
    edges = st.sampled_from([0, 10**6 - 1, 10**6, 253_402_300_799_999_999, 253_402_300_800_000_000])
    times = draw(st.lists(st.integers(10**6, 2 * 10**15) | edges if odd else st.integers(10**6, 2 * 10**15), min_size=n, max_size=n))
    return keys, rows, times


def _events(rows: list[dict[str, Any]], times: list[int]) -> list[Event]:
    return [
        Event(i + 1, f"01a00000-0000-7000-8000-{i:012d}", "r", json.dumps(p, ensure_ascii=False, separators=(",", ":")), times[i])
        for i, p in enumerate(rows)
    ]


def _route(events: list[Event], *, min_events: int) -> list[tuple[tuple[str, ...], list[str], bytes | None]]:
    old = copyrows.MIN_EVENTS
    copyrows.MIN_EVENTS = min_events
    try:
        router = Router({"r": "r"})
        router.specs = {"r": TableSpec.build("r", COLUMNS, ("id",))}
        with typed_path(False):  # the COPY text is what is compared (typed rows: test_typed_rows)
            routed = router.route(events)
    finally:
        copyrows.MIN_EVENTS = old
    return [(t.columns, [e.id for e in t.events], t.copy_text()) for t in routed.tables] + [
        (("refused",), [e.id for e, _ in routed.refused], None)
    ]




@settings(max_examples=200, deadline=None)
@given(batch=batches())
def test_columnar_and_per_event_write_the_same(batch: tuple[list[str], list[dict[str, Any]], list[int]]) -> None:
    _, rows, times = batch
    events = _events(rows, times)
    for name in DECODERS:
        with using(name):
            assert _route(events, min_events=1) == _route(events, min_events=10**9)


def _uniform(n: int) -> list[Event]:
    rows = [
        {"n": 2**62 + i, "x": i / 7, "amount": i, "s": f"name é {i}", "detail": {"k": [i, None, True]},
         "tags": ["a", "b"], "flag": i % 2 == 0}
        for i in range(n)
    ]
    return _events(rows, [1_700_000_000_000_000 + 1_000 * i for i in range(n)])


def _whole(spec: TableSpec) -> Any:
    missing = spec.shape(_uniform(1)[0])
    assert missing is not None
    omitted = spec.omitted(missing)
    from shipper.columnar import columnar_encoder

    written = [(c.name, routes._fill(c), c.is_array, c.type) for c in spec.columns if c.name not in omitted]
    return columnar_encoder(
        written, omitted, [m for m in missing if m not in omitted], field=copyrows._field,
        json_field=lambda v: copyrows._copy_escape(routes.json_text(v)) if type(v) in (dict, list) else copyrows._field(v),
        array_field=copyrows._array_field, escape=copyrows._copy_escape,
    )


def test_a_uniform_batch_goes_column_by_column(decoder: str) -> None:
    """Not a vacuous equality: the whole-batch path really takes a uniform batch, and declines
    one it must leave to the per-event path."""
    spec = TableSpec.build("r", COLUMNS, ("id",))
    events = _uniform(50)
    text = _whole(spec)(events)
    assert text is not None and text.count("\n") == 50
    assert text.splitlines()[0].split("\t") == [
        events[0].id, str(2**62), "0.0", "0", "name é 0", '{"k":[0,null,true]}', '{"a","b"}', "true",
        copyrows._copy_escape(events[0].payload), "2023-11-14 22:13:20.000000+00",
    ]
    assert _route(events, min_events=1) == _route(events, min_events=10**9)

    huge = events[:-1] + [events[-1]._replace(payload=events[-1].payload.replace(str(2**62 + 49), str(2**70 + 1)))]
    if decoder != "json":  # past 64 bits: orjson would read a float, so the check sends it to the standard decoder
        assert routes._fast_loads is not None and routes._fast_loads(huge[-1].payload)["n"] != 2**70 + 1
    assert str(2**70 + 1) in (_whole(spec)(huge) or "").splitlines()[-1].split("\t")[1]

    # values off their column's type (msgspec's typed read refuses them) keep the batch whole
    odd = dict(json.loads(events[-1].payload), n=True, s=None, x=3, amount="7")
    mixed = events[:-1] + [events[-1]._replace(payload=json.dumps(odd, separators=(",", ":")))]
    fields = (_whole(spec)(mixed) or "").splitlines()[-1].split("\t")
    assert fields[1:5] == ["true", "3", "7", "\\N"]
    assert _route(mixed, min_events=1) == _route(mixed, min_events=10**9)

    missing_key = events[:-1] + [events[-1]._replace(payload='{"n":1}')]
    assert _whole(spec)(missing_key) is None  # the per-event path sorts it out
    early = events[:-1] + [events[-1]._replace(created_at=999_999)]
    assert _whole(spec)(early) is None
    not_json = events[:-1] + [events[-1]._replace(payload='{"n":1},{"n":2}')]
    assert _whole(spec)(not_json) is None
    assert _route(not_json, min_events=1) == _route(not_json, min_events=10**9)


def test_payloads_that_only_parse_together_go_event_by_event(decoder: str) -> None:
    """The batch's payloads may be decoded as one JSON array, but each must still be one value
    on its own: here the first two only make an object together, and the third holds two, so
    the array has one value per event with every boundary in the wrong place."""
    spec = TableSpec.build("r", COLUMNS, ("id",))
    events = _uniform(50)
    a, b, c = events[10].payload, events[20].payload, events[21].payload
    cut = a.index('"s":"') + len('"s":"') + 2
    shifted = list(events)
    shifted[10] = events[10]._replace(payload=a[:cut])  # {"n":..,"s":"na
    shifted[11] = events[11]._replace(payload=a[cut:])  # me é 10",..}: together, one object
    shifted[12] = events[12]._replace(payload=f"{b},{c}")  # two objects in one payload
    joined = ",".join(e.payload for e in shifted)
    assert len(json.loads(f"[{joined}]")) == len(shifted)  # as one array it reads, one value per event
    assert _whole(spec)(shifted) is None
    per_event = _route(shifted, min_events=10**9)
    assert _route(shifted, min_events=1) == per_event
    assert per_event[-1] == (("refused",), [shifted[i].id for i in (10, 11, 12)], None)


@pytest.mark.parametrize(
    "odd",
    [
        '{"\\u006e":5,"x":0.5,"amount":1,"s":"k","detail":{},"tags":[],"flag":true}',  # an escaped key
        '{"n":5,"x":-0.0,"amount":1E5,"s":"\\ud800","detail":{"q":1,"q":2},"tags":[],"flag":true}',  # lone surrogate
        '{"n":5,"x":1.0e-3,"amount":-0,"s":"\\u0000","detail":[],"tags":["\\t"],"flag":false,"n":6}',  # twin keys
        ' {"n":5, "x":1e400, "amount":0.1, "s":"k", "detail":{}, "tags":null, "flag":true} ',  # spaces, out of range
        '{"n":5,"x":0.5,"amount":1,"s":"k","detail":{},"tags":[],"flag":true,"d":null}',  # a key left to its default
        '{"n":5,"x":0.5,"amount":1,"s":"k","detail":' + "[" * 3000 + "]" * 3000 + ',"tags":[],"flag":true}',  # deep
    ],
)
def test_odd_payloads_write_the_same_whichever_way_they_are_read(decoder: str, odd: str) -> None:
    """JSON that decoders may read differently (or refuse) in a batch that is otherwise uniform:
    the batch's text is the per-event path's, whichever decoder reads it."""
    events = _uniform(50)
    events[25] = events[25]._replace(payload=odd)
    assert _route(events, min_events=1) == _route(events, min_events=10**9)
