"""One event with string values and one model: every reader gives it the same p,
with features by name and hashed (``--hash-bits``) alike.

The contract turns ``{"site": "a", "tags": ["x", "y"]}`` into the features
``site=a``, ``tags=x``, ``tags=y`` (1.0 each) in one function
(:func:`stream.events.codec.features`); the worker's two paths (the compiled
kernel behind the batch decoder, river behind the general decoder), ``serve``
(``/v1/predict``) and ``score --offline`` all go through it, so for the same
model state they agree bit for bit. No broker: the worker's transport is the
fake of tests/unit/test_worker_compiled.py, the model reaches ``score`` as a
checkpoint file.
"""

from __future__ import annotations

import json
import random

import msgpack
import pytest
from starlette.testclient import TestClient

from stream.cli import main
from stream.config import MergeSettings, ModelSettings, ServeSettings, WorkerSettings
from stream.events.codec import decode_event, encode, features
from stream.events.hashing import featurizer
from stream.kafka.transport import Record
from stream.model.kernel import KernelModel
from stream.model.online import OnlineModel
from stream.runtime.worker import Worker
from stream.serve.app import Backend, create_app
from stream.serve.holder import ModelHolder
from stream.sync.checkpoint import CheckpointStore, Snapshot
from tests.fakes import FakeConsumer, FakeProducer

SITES = [f"s{i}" for i in range(40)]
TAGS = ["news", "sport", "ü", "a=b", "", "x y"]


def categorical_rows(n: int, seed: int) -> list[dict]:
    """Events mixing a number, a string and a list of strings, some labels depending on them."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        site = rng.choice(SITES)
        tags = rng.sample(TAGS, rng.randint(0, 3))
        x = {"n": rng.gauss(0, 2), "site": site, "tags": tags}
        y = int((SITES.index(site) % 3 == 0) + ("sport" in tags) + rng.random() > 1.2)
        rows.append({"id": f"r-{i}", "x": x, "y": y})
    return rows


QUERIES = [
    {"id": "q-0", "x": {"n": 0.5, "site": "s3", "tags": ["sport", "a=b"]}},
    {"id": "q-1", "x": {"site": "never-seen", "tags": []}},
    {"id": "q-2", "x": {"tags": ["news", "news", "x y"], "n": -1.0, "site": "s0"}},
]


@pytest.fixture(
    params=[
        ModelSettings(),
        ModelSettings(optimizer="ftrl", learning_rate=0.1),
        ModelSettings(hash_bits=5),  # 32 slots: features of one event share slots
        ModelSettings(hash_bits=18, optimizer="ftrl"),
    ],
    ids=["sgd", "ftrl", "sgd-hash5", "ftrl-hash18"],
)
def learned(request) -> Snapshot:
    settings: ModelSettings = request.param
    model = KernelModel(settings)
    featurize = featurizer(settings.hash_bits)
    for row in categorical_rows(2000, seed=1):
        event = decode_event(encode(row, "msgpack"))
        model.learn(featurize(event.x), event.y)
    return Snapshot(version=3, state=model.state(), model_config=settings.as_dict())


def reference(snapshot: Snapshot) -> dict[str, float]:
    """river on the contract's features (hashed when the model is): the p every
    path must give."""
    settings = ModelSettings(**snapshot.model_config)
    model = OnlineModel(settings)
    model.load_state(snapshot.state)
    featurize = featurizer(settings.hash_bits)
    return {q["id"]: model.predict_proba(featurize(features(q["x"], q["id"]))) for q in QUERIES}


def worker_ps(
    snapshot: Snapshot, model_impl: str, queries: list[dict] = QUERIES
) -> dict[str, float]:
    settings = WorkerSettings(
        model=ModelSettings(**snapshot.model_config),
        model_impl=model_impl,
        merge=MergeSettings(enabled=False),
    )
    producer = FakeProducer()
    worker = Worker(
        settings,
        "w-test",
        clock=lambda: 1_700_000_001.0,
        consumer=FakeConsumer(),
        producer=producer,
    )
    worker._co_partitioned = True
    worker.ledger.assign(0, model_offset=None, committed=None)
    worker.model.load_state(snapshot.state)
    records = [
        Record(i, None, encode(q, "msgpack"), 1_700_000_000_000) for i, q in enumerate(queries)
    ]
    worker._process({0: records})
    out = [msgpack.unpackb(value) for _, value, _, _, _ in producer.sent]
    return {p["id"]: p["p"] for p in out}


def test_both_worker_paths_give_rivers_p(learned: Snapshot) -> None:
    want = reference(learned)
    assert worker_ps(learned, "river") == want
    assert worker_ps(learned, "kernel") == want


def test_serve_gives_the_same_p_one_by_one_and_in_a_batch(learned: Snapshot) -> None:
    want = reference(learned)
    holder = ModelHolder("none")
    holder.offer(learned)
    with TestClient(create_app(ServeSettings(), Backend(holder, None, None))) as client:
        for q in QUERIES:
            r = client.post("/v1/predict", json=q)
            assert r.status_code == 200, r.text
            assert r.json()["p"] == want[q["id"]]
        r = client.post("/v1/predict", json=QUERIES)
        assert {p["id"]: p["p"] for p in r.json()} == want


def test_score_offline_gives_the_same_p(learned: Snapshot, tmp_path, capsys) -> None:
    want = reference(learned)
    CheckpointStore(tmp_path / "ckpt", pipeline={"features": "features"}).write(learned)
    rows = tmp_path / "rows.jsonl"  # one flat row per event: id and feature columns
    bad = {"id": "bad", "x": {"tags": ["ok", 3]}}
    rows.write_text("".join(json.dumps({"id": q["id"], **q["x"]}) + "\n" for q in [*QUERIES, bad]))
    assert main(["score", str(rows), "--offline", "--checkpoint-dir", str(tmp_path / "ckpt"),
                 "--id-column", "id"]) == 0  # fmt: skip
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {line["id"]: line["p"] for line in lines if "p" in line} == want
    assert [(line["id"], line["reason"]) for line in lines if "p" not in line] == [
        ("bad", "invalid_list")
    ]
