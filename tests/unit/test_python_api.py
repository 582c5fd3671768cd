"""The Python API (stream/api.py, docs/python.md): ``load_model`` scores exactly
as a worker does, ``run_workers`` is what ``learnstream work`` runs, ``import
stream`` stays cheap, and the docs' Python examples run."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import stream
from stream.config import (
    EventLimits,
    KafkaSettings,
    ModelSettings,
    RestartSettings,
    WorkerSettings,
    WorkSettings,
)
from stream.errors import BadEvent, ConfigError
from stream.events.codec import decode_event, encode
from stream.model.factory import build_model
from stream.serve.holder import serving
from stream.sync.checkpoint import CheckpointStore
from tests.doc_examples import PYTHON_NOT_RUN, ROOT, python_examples
from tests.unit.serve_fixtures import FEATURES, snapshot

SNAPSHOT = snapshot(7)


@pytest.fixture
def checkpoints(tmp_path):
    directory = tmp_path / "checkpoints"
    CheckpointStore(directory).write(SNAPSHOT)
    return directory


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    directory = tmp_path_factory.mktemp("api") / "checkpoints"
    CheckpointStore(directory).write(SNAPSHOT)
    return stream.load_model(directory)


def _kernel():
    """The worker's model: the compiled kernel, loaded with the same version."""
    kernel = build_model(ModelSettings(**SNAPSHOT.model_config), "kernel")
    kernel.load_state(SNAPSHOT.state)
    return kernel


values = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False) | st.integers(-1000, 1000)
feature_maps = st.dictionaries(st.sampled_from([*FEATURES, "unseen"]), values, max_size=6)


@settings(max_examples=60, deadline=None)
@given(st.lists(feature_maps, min_size=1, max_size=8), st.booleans())
def test_p_is_the_workers_p_bit_for_bit(model, xs, labeled):
    events = [
        {"id": f"e-{i}", "x": x, **({"y": i % 2} if labeled else {})} for i, x in enumerate(xs)
    ]
    # Unlabeled for the kernel: it scores each event without learning from it,
    # as the worker's p for that event is computed before it learns.
    floats = [{name: float(v) for name, v in x.items()} for x in xs]
    worker_ps = [float(p) for p in _kernel().score_and_learn_dicts(floats, [None] * len(xs))]
    assert [model.predict_proba(e) for e in events] == worker_ps
    assert model.predict_proba_many(events) == worker_ps


def test_the_model_is_the_newest_version_as_served(model):
    assert (model.version, model.n_learned) == (7, SNAPSHOT.n_learned)
    assert repr(model) == f"Model(version=7, n_learned={SNAPSHOT.n_learned})"
    served = serving(SNAPSHOT)
    event = {"id": 1, "x": {"f0": 0.5, "f3": -2.0}}
    assert model.predict_proba(event) == served.predict_proba(event["x"])


@pytest.mark.parametrize(
    "event",
    [
        {"x": {"f0": 1.0}},
        {"id": "e", "x": {"f0": None}},
        {"id": "e", "x": {"f0": float("nan")}},
        {"id": "e", "x": {"f0": 1e200}},
        {"id": "e"},
    ],
)
def test_a_bad_event_is_refused_with_the_workers_reason(model, event):
    with pytest.raises(BadEvent) as worker:
        decode_event(encode(event, "msgpack"), EventLimits())
    with pytest.raises(BadEvent) as api:
        model.predict_proba(event)
    assert (api.value.reason, str(api.value)) == (worker.value.reason, str(worker.value))
    with pytest.raises(BadEvent):
        model.predict_proba_many([{"id": "ok", "x": {}}, event])


def test_what_is_not_an_event_is_refused_as_undecodable(model):
    with pytest.raises(BadEvent, match="undecodable"):
        model.predict_proba(["id", "x"])  # type: ignore[arg-type]
    with pytest.raises(BadEvent, match="undecodable"):
        model.predict_proba({"id": "e", "x": {"f0": object()}})


def test_quantized_scoring_is_the_quantized_export(checkpoints):
    quantized = stream.load_model(checkpoints, quantize="int8")
    x = {"f0": 0.5, "f1": 3.0}
    assert quantized.predict_proba({"id": 1, "x": x}) == serving(SNAPSHOT, "int8").predict_proba(x)


def test_load_model_needs_a_source_and_refuses_an_empty_directory(checkpoints):
    with pytest.raises(ConfigError, match="needs a checkpoint directory"):
        stream.load_model()
    with pytest.raises(ConfigError, match="checkpoint_dir is empty"):
        stream.load_model("")


def test_import_stream_stays_cheap():
    code = (
        "import sys, stream; "
        "print(sorted(m for m in ('stream.api', 'river', 'numpy', 'msgpack') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (done.returncode, done.stdout) == (0, "[]\n"), done.stderr


def test_the_api_is_re_exported_lazily():
    from stream import api

    assert (stream.load_model, stream.run_workers, stream.Model) == (
        api.load_model,
        api.run_workers,
        api.Model,
    )
    assert {"load_model", "run_workers", "Model"} <= set(dir(stream))
    with pytest.raises(AttributeError, match="no_such_thing"):
        stream.no_such_thing  # noqa: B018


class _Supervisor:
    """Records how run_workers starts the supervisor, runs nothing."""

    made: list = []

    def __init__(self, worker, count, merger, level, fmt, restart):
        _Supervisor.made.append((worker, count, merger, level, fmt, restart))

    def run_until(self, stop):
        return 0 if stop.is_set() else 3

    def run_until_signal(self):
        return 4


@pytest.fixture
def supervisor(monkeypatch):
    from stream.kafka import topics
    from stream.runtime import supervisor as module

    ensured = []
    monkeypatch.setattr(topics, "ensure_pipeline", lambda kafka, names: ensured.append(names))
    monkeypatch.setattr(module, "Supervisor", _Supervisor)
    _Supervisor.made = []
    return ensured


def test_run_workers_creates_the_topics_then_runs_the_processes_until_stopped(supervisor):
    worker = WorkerSettings(kafka=KafkaSettings(bootstrap_servers="k:9092"))
    stop = threading.Event()
    stop.set()
    restart = RestartSettings(max_restarts=2)
    settings_ = WorkSettings(worker=worker, processes=3, restart=restart)
    assert stream.run_workers(settings_, stop) == 0
    assert supervisor == [worker.topics]
    ((made_worker, count, merger, level, fmt, made_restart),) = _Supervisor.made
    assert (made_worker, count, level, fmt, made_restart) == (worker, 3, "INFO", "text", restart)
    assert merger is not None and merger.kafka == worker.kafka


def test_run_workers_without_a_merger_or_a_stop_event(supervisor):
    assert stream.run_workers(WorkSettings(merger=False)) == 4  # SIGTERM/Ctrl-C mode
    assert stream.run_workers(WorkerSettings()) == 4
    (_, count, merger, *_), (_, one, with_merger, *_) = _Supervisor.made
    assert (count, merger, one) == (1, None, 1) and with_merger is not None


def test_every_python_example_is_run_or_says_why_not():
    examples = python_examples()
    assert any(e.path == "docs/python.md" for e in examples)
    named = {e.first_line for e in examples}
    assert set(PYTHON_NOT_RUN) <= named, "PYTHON_NOT_RUN names a block that no longer exists"


@pytest.mark.parametrize(
    "example",
    [e for e in python_examples() if e.first_line not in PYTHON_NOT_RUN],
    ids=lambda e: f"{e.path}:{e.first_line}",
)
def test_the_docs_python_examples_run(example, checkpoints, monkeypatch, capsys):
    monkeypatch.chdir(checkpoints.parent)
    exec(compile(example.text, example.path, "exec"), {"__name__": "__doc_example__"})
    assert f"version {SNAPSHOT.version}" in capsys.readouterr().out
