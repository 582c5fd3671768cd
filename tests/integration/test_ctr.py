"""The recommended CTR model end to end (issue 17, item 5): FTRL-Proximal on
hashed categorical events, learned by two worker processes and their merger,
exported and served, one p everywhere.

``learnstream work --processes 2`` with the recommended flags learns a stream
of events with strings and lists of strings, every labeled event exactly once;
once both hold the learned version, they score unlabeled events;
``serve`` (following the model topic) and ``score`` give those events the
workers' p bit for bit, and the exported whole-state JSON (by its documented
formula) and ONNX graph (in onnxruntime) to 1e-6.
"""

from __future__ import annotations

import contextlib
import io
import json
import signal
import subprocess
from collections.abc import Callable, Iterator

import numpy as np
import onnxruntime as ort
import pytest
from starlette.testclient import TestClient

from stream import cli
from stream.config import ServeSettings
from stream.events.codec import encode, features
from stream.events.hashing import featurizer
from stream.model.merge import FtrlParams, ftrl_weight
from stream.serve.app import Backend, create_app
from stream.serve.holder import ModelHolder
from stream.serve.quality import RollingQuality
from stream.serve.runtime import ServeRuntime
from tests.unit.test_categorical_paths import QUERIES, categorical_rows
from tests.unit.test_ctr_parity import onnx_inputs, p_from_whole_json
from tests.waiting import wait_for

from .helpers import (
    create_topics,
    final_model,
    pipeline_flags,
    read_predictions,
    send_raw,
    wait_for_learned,
    work_command,
)

pytestmark = pytest.mark.integration

BITS = 12
# The recommended CTR model (docs): FTRL-Proximal, alpha 0.2, beta 1, L1 1, L2 0,
# one-hot features unscaled, hashed.
CTR_FLAGS = [
    "--optimizer", "ftrl", "--learning-rate", "0.2", "--ftrl-beta", "1", "--ftrl-l1", "1",
    "--l2", "0", "--no-scaler", "--hash-bits", str(BITS),
]  # fmt: skip
N_LABELED = 3000


@contextlib.contextmanager
def _working(kafka, topics, checkpoints) -> Iterator[None]:
    """``learnstream work --processes 2`` (two workers and the merger) with the
    CTR flags for the block; then SIGTERM, and it must exit cleanly (its log is
    printed if the block fails)."""
    work = subprocess.Popen(
        work_command(
            kafka,
            topics,
            "--merge-every",
            "100",
            "--merge-interval-s",
            "0.5",
            *CTR_FLAGS,
            processes=2,
            checkpoint_dir=checkpoints,
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield
    except BaseException:
        work.send_signal(signal.SIGTERM)
        _, stderr = work.communicate(timeout=60)
        print(f"learnstream work exited {work.returncode}; its log:\n{stderr}")
        raise
    work.send_signal(signal.SIGTERM)
    _, stderr = work.communicate(timeout=60)
    assert work.returncode == 0, stderr


def _both_workers_hold(kafka, topics, version: int, sent: list[str]) -> Callable[[], bool]:
    """A condition: both partitions' workers score with ``version`` or newer,
    asked by 8 unlabeled probe events (keyed over both partitions) each time;
    their ids are appended to ``sent``."""
    held: set[int] = set()

    def check() -> bool:
        probes = [{"id": f"probe-{len(sent) + i}", "x": {"site": "s1"}} for i in range(8)]
        sent.extend(p["id"] for p in probes)
        send_raw(kafka, topics.features, ((p["id"].encode(), encode(p, "json")) for p in probes))
        ids = {p["id"] for p in probes}
        for p in read_predictions(kafka, topics.predictions, ids, settle_s=0.2):
            if p["id"] in ids and p["model_version"] >= version:
                held.add(p["partition"])
        return held == {0, 1}

    return check


def _cli(*args: str) -> str:
    out = io.TextIOWrapper(io.BytesIO())
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        assert cli.main([*args, "--log-level", "WARNING"]) == 0
    out.flush()
    return out.buffer.getvalue().decode()


def test_ftrl_on_hashed_categorical_events_learns_once_and_every_reader_gives_the_workers_p(
    kafka, topics, tmp_path
):
    checkpoints = tmp_path / "ckpt"
    create_topics(kafka, topics, partitions=2)
    rows = categorical_rows(N_LABELED, seed=5)
    queries = [
        *QUERIES,
        {"id": "q-unicode", "x": {"site": "城市", "tags": ["ü", "news", "ü"], "n": 2.5}},
        *({"id": f"u-{i}", "x": r["x"]} for i, r in enumerate(categorical_rows(200, seed=6))),
    ]
    ids = {q["id"] for q in queries}

    by_worker: dict[str, set] = {}
    probes: list[str] = []
    with _working(kafka, topics, checkpoints):
        # Learn: two workers and the merger, events keyed by id over both partitions.
        send_raw(
            kafka,
            topics.features,
            ((r["id"].encode(), encode(r, ("msgpack", "json")[i % 2])) for i, r in enumerate(rows)),
        )
        learned = wait_for_learned(kafka, topics, N_LABELED)
        # Score: once both workers hold that version, unlabeled events (which teach nothing).
        wait_for(
            _both_workers_hold(kafka, topics, learned.version, probes),
            timeout_s=120,
            what=f"both workers to hold version {learned.version}",
        )
        send_raw(kafka, topics.features, ((q["id"].encode(), encode(q, "json")) for q in queries))
        for p in read_predictions(kafka, topics.predictions, ids, settle_s=0.5):
            if p["id"] in ids:
                by_worker.setdefault(p["id"], set()).add((p["model_version"], p["p"]))

    final = final_model(kafka, topics)
    assert final.n_learned == N_LABELED  # every labeled event learned once
    # and the model has seen every event, labeled or not, once.
    assert sum(final.offsets.values()) == N_LABELED + len(probes) + len(queries)
    assert len(final.offsets) == 2
    # Versions published after the stream was learned (contributions sent at stop)
    # hold the same model: unlabeled events teach nothing.
    assert (learned.n_learned, learned.state) == (final.n_learned, final.state)
    config = final.model_config
    assert (config["optimizer"], config["hash_bits"], config["scale"]) == ("ftrl", BITS, False)
    assert (config["learning_rate"], config["ftrl_beta"], config["ftrl_l1"], config["l2"]) == (
        0.2, 1.0, 1.0, 0.0
    )  # fmt: skip
    # FTRL's per-coordinate state holds exactly the slots the stream touched.
    hasher = featurizer(BITS)
    touched = {s for r in rows for s in hasher(features(r["x"], r["id"]))}
    assert set(final.state.ftrl_n) == touched
    assert set(final.state.weights) <= touched
    assert not final.state.scaler_counts
    # Merged, each slot's weight is FTRL-Proximal's closed form of its summed z and n
    # (0 inside the L1 ball).
    params = FtrlParams(alpha=0.2, beta=1.0, l1=1.0, l2=0.0)
    z, n = final.state.ftrl_z, final.state.ftrl_n
    assert {s: final.state.weights.get(s, 0.0) for s in touched} == {
        s: ftrl_weight(z[s], n[s], params) for s in touched
    }

    # The workers' p: every prediction of an event (duplicates too) of one of
    # these versions, and of one p.
    assert set(by_worker) == ids
    versions = {v for seen in by_worker.values() for v, _ in seen}
    assert versions <= set(range(learned.version, final.version + 1))
    assert all(len({p for _, p in seen}) == 1 for seen in by_worker.values())
    worker_p = {i: seen.pop()[1] for i, seen in by_worker.items()}

    # serve, following the model topic: bit for bit, one by one and in a batch.
    serve_settings = ServeSettings(kafka=kafka, topics=topics, checkpoint_dir=checkpoints)
    holder = ModelHolder()
    runtime = ServeRuntime(serve_settings, holder, RollingQuality(100), lag_poll_s=0.5)
    app = create_app(serve_settings, Backend(holder, runtime.quality, None))
    runtime.start()
    try:
        wait_for(
            lambda: holder.current and holder.current.version == final.version,
            timeout_s=60,
            what="serve holds the final version",
        )
        with TestClient(app) as http:
            batch = http.post("/v1/predict", json=queries).json()
            one = [http.post("/v1/predict", json=q).json() for q in queries[:5]]
    finally:
        runtime.stop()
    assert {s["id"]: s["p"] for s in batch} == worker_p
    assert {s["model_version"] for s in batch} == {final.version}
    assert all(s["p"] == worker_p[s["id"]] for s in one)

    # score, from the model topic: bit for bit.
    flat = tmp_path / "queries.jsonl"
    flat.write_text("".join(json.dumps({"id": q["id"], **q["x"]}) + "\n" for q in queries))
    source = [*pipeline_flags(kafka, topics), "--checkpoint-dir", str(checkpoints)]
    scored = _cli("score", str(flat), "--id-column", "id", *source).splitlines()
    assert {s["id"]: s["p"] for s in map(json.loads, scored)} == worker_p

    # The exports: the whole-state JSON by its formula and the ONNX graph, to 1e-6.
    want = np.array([worker_p[q["id"]] for q in queries])
    whole = json.loads(_cli("model", "export", "--format", "json", *source))
    assert whole["version"] == final.version
    assert whole["hashing"]["bits"] == BITS
    by_formula = np.array([p_from_whole_json(whole, q["x"]) for q in queries])
    assert np.max(np.abs(by_formula - want)) <= 1e-6
    onnx_file = tmp_path / "model.onnx"
    _cli("model", "export", "--format", "onnx", "--out", str(onnx_file), *source)
    session = ort.InferenceSession(onnx_file.read_bytes(), providers=["CPUExecutionProvider"])
    (by_onnx,) = session.run(["p"], onnx_inputs([q["x"] for q in queries], whole["hashing"]))
    assert np.max(np.abs(by_onnx - want)) <= 1e-6
