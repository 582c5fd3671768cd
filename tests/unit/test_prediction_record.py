"""One function builds a prediction record, and every place that makes one uses it.

The contract's fields (docs/contracts.md, "The prediction contract") are named
once, in :func:`stream.events.codec.prediction_record`. The worker (its river
path and its compiled path), ``serve``'s ``/v1/predict`` and ``score`` each
turn what they computed into a record through it: for any events, what each
of them emits is, field for field and in the same order, the builder's record
of the same inputs (the id, the p it computed, the model version, the label,
and for the worker where and when the event was).
"""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from stream.cli import main
from stream.config import MergeSettings, ServeSettings, WorkerSettings
from stream.events.codec import decode_event, decode_map, encode, prediction_record
from stream.kafka.transport import Record
from stream.runtime.worker import Worker
from stream.serve.app import Backend, create_app
from stream.serve.holder import ModelHolder
from stream.sync.checkpoint import CheckpointStore
from tests.fakes import FakeConsumer, FakeProducer
from tests.unit.serve_fixtures import snapshot

# The contract's table, in the order a record carries them.
ANSWER = ["id", "p", "y_pred", "model_version"]
PUBLISHED = [*ANSWER, "worker", "partition", "offset", "ts_event", "ts_record", "ts_scored"]

ids = st.one_of(st.text(max_size=20), st.integers(-(2**63), 2**64 - 1))
labels = st.sampled_from([None, False, True])
timestamps = st.one_of(st.none(), st.floats(0, 2e9))
events = st.lists(
    st.fixed_dictionaries(
        {
            "id": ids,
            "x": st.dictionaries(
                st.sampled_from(["f0", "f1", "f2"]), st.floats(-1e3, 1e3), min_size=1
            ),
            "y": labels,
            "ts": timestamps,
            "encoding": st.sampled_from(["msgpack", "json"]),
        }
    ),
    min_size=1,
    max_size=30,
)
SLOW = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _wire(event: dict) -> bytes:
    obj = {"id": event["id"], "x": event["x"]}
    if event["y"] is not None:
        obj["y"] = int(event["y"])
    if event["ts"] is not None:
        obj["ts"] = event["ts"]
    return encode(obj, event["encoding"])


@given(
    event_id=ids,
    p=st.floats(0, 1),
    version=st.integers(0, 2**31),
    y=st.sampled_from([None, False, True, 0, 1]),
    ts_event=timestamps,
    ts_record=st.floats(0, 2e9),
)
def test_the_record_has_the_contracts_fields_in_order(
    event_id, p, version, y, ts_event, ts_record
) -> None:
    answer = prediction_record(event_id, p, version, y)
    label = [] if y is None else ["y"]
    assert list(answer) == ANSWER + label
    assert (answer["id"], answer["p"], answer["model_version"]) == (event_id, p, version)
    assert answer["y_pred"] == (1 if p >= 0.5 else 0)
    if y is not None:
        assert answer["y"] == int(y) and type(answer["y"]) is int
    published = prediction_record(event_id, p, version, y, "w-0", 3, 17, ts_event, ts_record, 9.0)
    assert list(published) == PUBLISHED + label
    assert {k: published[k] for k in answer} == answer
    assert (published["worker"], published["partition"], published["offset"]) == ("w-0", 3, 17)
    assert published["ts_event"] == (ts_event if ts_event is not None else ts_record)
    assert (published["ts_record"], published["ts_scored"]) == (ts_record, 9.0)


def _published(model_impl: str, batch: list[dict]) -> list[tuple[dict, dict]]:
    """(what the worker sent, the builder's record of the same inputs) per event."""
    settings = WorkerSettings(model_impl=model_impl, merge=MergeSettings(enabled=False))
    producer = FakeProducer()
    worker = Worker(
        settings,
        "w-test",
        clock=lambda: 1_700_000_001.5,
        consumer=FakeConsumer(partitions=(2,)),
        producer=producer,
    )
    worker._co_partitioned = True
    worker.ledger.assign(2, model_offset=None, committed=None)
    records = [Record(i, None, _wire(e), 1_700_000_000_000 + i) for i, e in enumerate(batch)]
    worker._process({2: records})
    sent = [decode_map(v)[0] for t, v, *_ in producer.sent if t == settings.topics.predictions]
    assert len(sent) == len(batch)
    pairs = []
    for offset, (record, event) in enumerate(zip(sent, batch, strict=True)):
        decoded = decode_event(_wire(event))
        want = prediction_record(
            decoded.id,
            record["p"],  # the model's, which the worker computed
            0,
            decoded.y,
            "w-test",
            2,
            offset,
            decoded.ts,
            (1_700_000_000_000 + offset) / 1000.0,
            1_700_000_001.5,
        )
        pairs.append((record, want))
    return pairs


@SLOW
@given(batch=events)
def test_the_river_path_publishes_the_builders_record(batch) -> None:
    for record, want in _published("river", batch):
        assert list(record.items()) == list(want.items())


@SLOW
@given(batch=events)
def test_the_compiled_path_publishes_the_builders_record(batch) -> None:
    for record, want in _published("kernel", batch):
        assert list(record.items()) == list(want.items())


@SLOW
@given(batch=events, as_batch=st.booleans())
def test_serve_answers_with_the_builders_record(batch, as_batch) -> None:
    holder = ModelHolder("none")
    holder.offer(snapshot(7))
    served = holder.current
    body = [{"id": e["id"], "x": e["x"]} for e in (batch if as_batch else batch[:1])]
    with TestClient(create_app(ServeSettings(), Backend(holder, None, None))) as client:
        answer = client.post("/v1/predict", json=body if as_batch else body[0]).json()
    answers = answer if as_batch else [answer]
    for got, event in zip(answers, body, strict=True):
        assert got == prediction_record(event["id"], served.predict_proba(event["x"]), 7)


@SLOW
@given(batch=events)
def test_score_prints_the_builders_record(batch, tmp_path_factory, capsys) -> None:
    tmp = tmp_path_factory.mktemp("score")
    learned = snapshot(4)
    CheckpointStore(tmp / "ckpt", pipeline={"features": "features"}).write(learned)
    holder = ModelHolder("none")
    holder.offer(learned)
    served = holder.current
    rows = tmp / "rows.jsonl"
    rows.write_text(
        "".join(
            json.dumps({"id": e["id"], **e["x"], **({} if e["y"] is None else {"y": e["y"]})})
            + "\n"
            for e in batch
        )
    )
    capsys.readouterr()
    argv = ["score", str(rows), "--offline", "--checkpoint-dir", str(tmp / "ckpt")]
    assert main([*argv, "--id-column", "id"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == len(batch)
    for got, event in zip(lines, batch, strict=True):
        want = prediction_record(event["id"], served.predict_proba(event["x"]), 4, event["y"])
        assert list(got.items()) == list(want.items())
