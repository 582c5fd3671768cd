"""``learnstream serve`` on a real stream: it follows the model topic, swaps each
new version in, and scores exactly as ``score --offline`` and the worker do."""

from __future__ import annotations

import contextlib
import csv
import io
import json

import pytest
from starlette.testclient import TestClient

from stream import cli
from stream.config import MergerSettings, ServeSettings
from stream.events import codec
from stream.events.codec import encode, event_to_map
from stream.events.sources import river_dataset
from stream.observe.series import Series
from stream.serve.app import Backend, create_app
from stream.serve.holder import ModelHolder
from stream.serve.quality import RollingQuality
from stream.serve.runtime import ServeRuntime
from stream.sync.feed import published_model
from tests.waiting import wait_for

from .helpers import MergerThread, WorkerThread, create_topics, merging, read_predictions, send_raw
from .helpers import worker_settings as make_worker_settings

pytestmark = pytest.mark.integration


def test_serve_follows_swaps_and_scores_as_score_offline_and_the_worker(kafka, topics, tmp_path):
    checkpoints = tmp_path / "ckpt"
    create_topics(kafka, topics, partitions=1)
    merge = merging(
        every_events=100,
        interval_s=0.3,
        checkpoint_dir=checkpoints,
        checkpoint_interval_s=0.0,
        checkpoint_keep=1000,
    )
    settings = make_worker_settings(kafka, topics, merge=merge)
    serve_settings = ServeSettings(kafka=kafka, topics=topics, checkpoint_dir=checkpoints)
    holder = ModelHolder()
    series = Series(step_s=0.5, window_s=120.0)
    runtime = ServeRuntime(serve_settings, holder, RollingQuality(1000), series, lag_poll_s=0.5)
    app = create_app(serve_settings, Backend(holder, runtime.quality, runtime.producer, series))
    rows = list(river_dataset("phishing"))
    with (
        MergerThread(MergerSettings.for_workers(settings)),
        WorkerThread(settings) as worker,
        TestClient(app) as http,
    ):
        # No version held yet: not healthy, and it says why.
        unhealthy = http.get("/healthz")
        assert (unhealthy.status_code, unhealthy.json()) == (503, {"status": "no_model"})
        runtime.start()
        try:
            send_raw(
                kafka,
                topics.features,
                ((None, encode(event_to_map(f"l-{i}", x, y, None), "msgpack")) for i, x, y in rows),
            )
            # Every labeled event learned, the newest version served and held by the worker.
            latest = wait_for(
                lambda: (
                    (m := published_model(kafka, topics, "test-reader", 5))
                    and m.n_learned == len(rows)
                    and m
                ),
                timeout_s=60,
                what="all events learned",
            )
            wait_for(
                lambda: holder.current and holder.current.version == latest.version,
                timeout_s=60,
                what="serve swapped in the newest version",
            )
            wait_for(
                lambda: worker.worker.model_version == latest.version,
                timeout_s=60,
                what="worker synced to the newest version",
            )
            assert holder.swaps >= 1
            assert http.get("/healthz").json() == {"status": "ok", "model_version": latest.version}
            assert http.get("/v1/model").json()["n_learned"] == len(rows)

            # /v1/predict on unlabeled copies of the stream.
            xs = [x for _, x, _ in rows[:300]]
            served = http.post(
                "/v1/predict", json=[{"id": f"u-{i}", "x": x} for i, x in enumerate(xs)]
            ).json()
            assert {item["model_version"] for item in served} == {latest.version}

            # score --offline on the same rows, from the checkpoint of that version.
            path = tmp_path / "unlabeled.csv"
            with path.open("w", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=["id", *xs[0]])
                writer.writeheader()
                for i, x in enumerate(xs):
                    writer.writerow({"id": f"u-{i}", **x})
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                code = cli.main(
                    [
                        "score",
                        str(path),
                        "--offline",
                        "--checkpoint-dir",
                        str(checkpoints),
                        "--features-topic",
                        topics.features,
                        "--id-column",
                        "id",
                        "--log-level",
                        "WARNING",
                    ]
                )
            assert code == 0
            offline = [json.loads(line) for line in out.getvalue().splitlines()]
            assert [o["model_version"] for o in offline] == [latest.version] * len(xs)
            assert [o["p"] for o in offline] == [s["p"] for s in served]

            # The worker scoring the same events (unlabeled: it learns nothing from them).
            send_raw(
                kafka,
                topics.features,
                ((None, encode({"id": f"u-{i}", "x": x}, "json")) for i, x in enumerate(xs)),
            )
            # It holds the served version and learns nothing from unlabeled events,
            # so every one of its predictions (duplicates too) is of that version
            # and bit for bit the served p.
            ids = {f"u-{i}" for i in range(len(xs))}
            published = read_predictions(kafka, topics.predictions, ids, settle_s=0.5)
            by_worker = [(p["id"], p["model_version"], p["p"]) for p in published if p["id"] in ids]
            assert {i for i, _, _ in by_worker} == ids
            assert sorted(set(by_worker)) == sorted(
                (s["id"], latest.version, s["p"]) for s in served
            )
            # The live page's rolling quality comes from the predictions topic.
            status = wait_for(
                lambda: (s := http.get("/v1/status").json())["quality"]["n"] > 0 and s,
                timeout_s=60,
                what="rolling quality from the predictions topic",
            )
            assert status["model_version"] >= latest.version
            assert 0.5 < status["quality"]["accuracy"] <= 1.0

            # The dashboard's series, from the same topics: events scored (the
            # labeled stream, then the unlabeled copies), events learned between
            # versions, latency, quality, the served version, and the group's lag.
            body = wait_for(
                lambda: (
                    (b := http.get("/v1/series").json())["model_version"]
                    and b["model_version"][-1] >= latest.version
                    and b["lag"].get("0")
                    and b["lag"]["0"][-1] == 0
                    and b
                ),
                timeout_s=60,
                what="the series to show the served version and the group caught up",
            )
            step = body["step_s"]
            assert sum(body["scored_per_s"]) * step >= len(xs)
            assert sum(body["learned_per_s"]) > 0
            assert any(p is not None for p in body["latency_p99_s"])
            assert any(a is not None and 0.5 < a <= 1.0 for a in body["accuracy"])

            # A bad record: one dead letter per second of one bucket, by its reason.
            send_raw(kafka, topics.features, [(None, b"\xc1 not msgpack nor json")])
            dead = wait_for(
                lambda: http.get("/v1/series").json()["dead_letters_per_s"],
                timeout_s=60,
                what="the dead letter on the series",
            )
            assert list(dead) == [codec.UNDECODABLE]
            assert sum(dead[codec.UNDECODABLE]) * step == 1
        finally:
            runtime.stop()
