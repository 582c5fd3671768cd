"""Producer sources: deterministic, and honest about what they read."""

from __future__ import annotations

import itertools

from stream.events.sources import SyntheticStream, file_rows, river_dataset


def test_synthetic_stream_is_reproducible_and_drifts():
    a = list(itertools.islice(SyntheticStream(n_features=3, seed=1), 50))
    b = list(itertools.islice(SyntheticStream(n_features=3, seed=1), 50))
    assert a == b
    stream = SyntheticStream(n_features=3, seed=1, drift_at=10)
    before, after = stream.true_model(), stream.true_model(drifted=True)
    assert not (before[0] == after[0]).all()
    assert a[:10] != list(itertools.islice(SyntheticStream(n_features=3, seed=2), 10))


def test_phishing_is_bundled_with_labels():
    rows = list(river_dataset("phishing"))
    assert len(rows) == 1250
    assert {type(y) for _, _, y in rows} == {bool}


def test_csv_rows_pass_bad_cells_through_for_the_worker_to_reject(tmp_path):
    path = tmp_path / "events.csv"
    path.write_text("id,a,b,label\nr1,1.5,2,1\nr2,oops,3,0\nr3,4,,\n")
    rows = list(file_rows(path, label_column="label", id_column="id"))
    assert rows == [
        ("r1", {"a": 1.5, "b": 2.0}, True),
        ("r2", {"a": "oops", "b": 3.0}, False),
        ("r3", {"a": 4.0, "b": None}, None),
    ]


def test_jsonl_rows(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text('{"a": 1, "y": true}\n\n{"a": 2, "y": 0}\n')
    assert list(file_rows(path)) == [(0, {"a": 1}, True), (1, {"a": 2}, False)]
