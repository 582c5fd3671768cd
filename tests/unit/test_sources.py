"""Producer sources: deterministic, and honest about what they read."""

from __future__ import annotations

import itertools
from collections import Counter

import numpy as np
import pytest

from stream.errors import ConfigError
from stream.events.sources import (
    CTR_FIELDS,
    CtrStream,
    SyntheticStream,
    dataset_rows,
    file_rows,
    river_dataset,
)


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


def test_bananas_is_bundled_with_labels():
    rows = list(river_dataset("bananas"))
    assert len(rows) == 5300
    assert {type(y) for _, _, y in rows} == {bool}
    assert {len(x) for _, x, _ in rows} == {2}


def test_the_ctr_stream_is_categorical_reproducible_and_clicked_a_few_percent_of_the_time():
    stream = CtrStream(n_events=20_000, seed=3)
    rows = list(stream)
    assert rows == list(CtrStream(n_events=20_000, seed=3))
    assert rows != list(CtrStream(n_events=20_000, seed=4))
    assert [event_id for event_id, _, _ in rows[:2]] == ["ctr-0", "ctr-1"]
    names = [name for name, _, _ in CTR_FIELDS]
    assert len(names) == 20
    for _, x, y in rows:
        assert list(x) == names
        assert type(y) is bool
    for name, size, _ in CTR_FIELDS:
        values = [int(x[name]) for _, x, _ in rows]
        assert min(values) >= 0 and max(values) < size, name
    clicks = sum(y for _, _, y in rows)
    assert 0.02 * len(rows) < clicks < 0.06 * len(rows)


def test_ctr_popularity_is_heavy_headed():
    """A few values of a large field come often, most rarely: the most frequent
    user shows up far more than the uniform 1/1.5M of the time."""
    rows = list(CtrStream(n_events=20_000, seed=3))
    users = Counter(x["user"] for _, x, _ in rows)
    assert users.most_common(1)[0][1] >= 100
    assert len(users) > 5_000


def test_ctr_true_probabilities_are_the_ones_the_clicks_were_drawn_from():
    stream = CtrStream(n_events=50_000, seed=5)
    p = stream.true_probabilities()
    clicks = np.array([y for _, _, y in stream])
    assert p.shape == clicks.shape == (50_000,)
    # The clicks' rate matches the mean probability within 4 standard errors.
    se = float(np.sqrt(np.mean(p * (1 - p)) / len(p)))
    assert abs(clicks.mean() - p.mean()) < 4 * se
    # Clicked impressions had higher true probabilities than the others.
    assert p[clicks].mean() > 2 * p[~clicks].mean()


def test_dataset_rows_names_ctr_and_the_river_datasets():
    first = next(dataset_rows("ctr"))
    assert first[0] == "ctr-0" and len(first[1]) == 20
    assert next(dataset_rows("phishing")) == next(river_dataset("phishing"))
    with pytest.raises(ConfigError, match="unknown dataset 'nope'; known: phishing, bananas, ctr"):
        next(dataset_rows("nope"))
