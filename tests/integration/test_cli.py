"""The commands a user types, run as a user runs them."""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from .helpers import WorkerThread, learnstream, read_predictions, work_command, worker_settings

pytestmark = pytest.mark.integration


def _learnstream(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        learnstream(*args),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _topic_flags(topics) -> list[str]:
    return ["--features-topic", topics.features, "--predictions-topic", topics.predictions]


def test_demo_prints_a_summary_with_every_event_predicted(kafka, topics):
    done = _learnstream(
        "demo",
        "--bootstrap",
        kafka.bootstrap_servers,
        "--group-id",
        topics.group_id,
        *_topic_flags(topics),
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert re.search(r"events produced\s+1250\b", out)
    assert re.search(r"predictions \(unique ids\)\s+1250\b", out)
    accuracy = {
        m[0]: float(m[1]) for m in re.findall(r"(pipeline|single river)\s+accuracy (\S+)", out)
    }
    assert accuracy["single river"] > 0.85
    assert accuracy["pipeline"] > 0.8
    assert re.search(r"p50=\d", out) and re.search(r"p99=\d", out)


def test_topics_produce_and_read_predictions_from_a_file(kafka, topics, tmp_path):
    created = _learnstream(
        "topics",
        "create",
        "--partitions",
        "2",
        "--bootstrap",
        kafka.bootstrap_servers,
        *_topic_flags(topics),
    )
    assert created.returncode == 0, created.stderr
    assert f"{topics.features}\tpartitions=2" in created.stdout
    assert f"{topics.features}.dlq\tpartitions=1" in created.stdout

    events = tmp_path / "events.csv"
    events.write_text("id,a,b,y\nr1,0.5,1.0,1\nr2,1.5,-1.0,0\nr3,2.0,0.0,\n")
    sent = _learnstream(
        "produce",
        "--file",
        str(events),
        "--id-column",
        "id",
        "--encoding",
        "json",
        "--no-progress",
        "--bootstrap",
        kafka.bootstrap_servers,
        *_topic_flags(topics),
    )
    assert sent.returncode == 0, sent.stderr
    assert "sent 3 events" in sent.stdout

    with WorkerThread(worker_settings(kafka, topics)):
        read = _learnstream(
            "predictions",
            "--from-beginning",
            "--json",
            "--limit",
            "3",
            "--idle-timeout-s",
            "60",
            "--bootstrap",
            kafka.bootstrap_servers,
            *_topic_flags(topics),
        )
    assert read.returncode == 0, read.stderr
    lines = [json.loads(line) for line in read.stdout.splitlines()]
    assert sorted(p["id"] for p in lines) == ["r1", "r2", "r3"]
    assert {p["id"]: p.get("y") for p in lines} == {"r1": 1, "r2": 0, "r3": None}
    assert all(0.0 <= p["p"] <= 1.0 and p["model_version"] == 0 for p in lines)


def test_unreachable_broker_is_a_clear_error():
    done = _learnstream("topics", "create", "--bootstrap", "127.0.0.1:1", timeout=120)
    assert done.returncode == 2
    assert "127.0.0.1:1" in done.stderr


def test_work_merges_and_model_commands_read_the_global_model(kafka, topics, tmp_path):
    """`work` with its merger; then `model show`, `model export`, `score`, offline too."""
    import signal as _signal

    from stream.events.sources import SyntheticStream
    from stream.tools.produce import ProduceSettings, produce

    checkpoints = tmp_path / "ckpt"
    common = ["--bootstrap", kafka.bootstrap_servers, *_topic_flags(topics)]
    created = _learnstream("topics", "create", "--partitions", "2", *common)
    assert created.returncode == 0, created.stderr
    work = subprocess.Popen(
        work_command(
            kafka,
            topics,
            "--merge-every",
            "100",
            processes=2,
            checkpoint_dir=checkpoints,
            metrics_port=None,
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        produce(
            iter(SyntheticStream(seed=4)),
            ProduceSettings(kafka=kafka, topic=topics.features, limit=3000),
        )
        read_predictions(kafka, topics.predictions, {str(i) for i in range(3000)}, settle_s=0.5)
    finally:
        work.send_signal(_signal.SIGTERM)
        _, stderr = work.communicate(timeout=60)
    assert work.returncode == 0, stderr
    assert "merged to version" in stderr and "checkpoint written" in stderr

    exported = _learnstream(
        "model", "export", "--format", "json", "--checkpoint-dir", str(checkpoints), *common
    )
    assert exported.returncode == 0, exported.stderr
    model = json.loads(exported.stdout)
    assert model["n_learned"] == 3000 and model["version"] >= 1
    assert set(model["weights"]) == {f"f{i}" for i in range(10)}

    # Offline: the checkpoint directory alone, read for this pipeline's features topic.
    offline = ["--offline", "--checkpoint-dir", str(checkpoints), *_topic_flags(topics)]
    shown = _learnstream("model", "show", *offline)
    assert shown.returncode == 0, shown.stderr
    assert re.search(rf"version\s+{model['version']}\b", shown.stdout)
    assert re.search(r"learned events\s+3000\b", shown.stdout)

    rows = tmp_path / "holdout.jsonl"
    rows.write_text('{"f0": 1.0, "f1": -2.0, "y": 1}\n{"f0": 0.0, "f1": 0.5}\n')
    scored = _learnstream("score", str(rows), *offline)
    assert scored.returncode == 0, scored.stderr
    lines = [json.loads(line) for line in scored.stdout.splitlines()]
    assert [line["id"] for line in lines] == [0, 1]
    assert all(line["model_version"] == model["version"] for line in lines)
    assert "accuracy" in scored.stderr and "over 1 labeled rows" in scored.stderr
