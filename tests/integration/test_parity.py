"""One worker, one partition: the pipeline is river's predict-then-learn, exactly."""

from __future__ import annotations

import pytest

from stream.config import ModelSettings
from stream.events.codec import encode, event_to_map, features
from stream.events.hashing import featurizer
from stream.events.sources import river_dataset
from stream.model.online import OnlineModel

from .helpers import WorkerThread, create_topics, read_predictions, send_raw, worker_settings

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    "model",
    [ModelSettings(), ModelSettings(optimizer="ftrl", learning_rate=0.1)],
    ids=["sgd", "ftrl"],
)
def test_every_prediction_equals_rivers_progressive_validation(kafka, topics, model, client):
    create_topics(kafka, topics, partitions=1)
    rows = list(river_dataset("phishing"))
    send_raw(
        kafka,
        topics.features,
        ((None, encode(event_to_map(i, x, y, None), "msgpack")) for i, x, y in rows),
    )

    with WorkerThread(worker_settings(kafka, topics, model=model, client=client)):
        predictions = read_predictions(kafka, topics.predictions, {i for i, _, _ in rows})

    # river's progressive_val_score, step by step: predict, then learn.
    reference = OnlineModel(model)
    expected = {}
    for i, x, y in rows:
        expected[i] = reference.predict_proba(x)
        reference.learn(x, y)

    # Bit-identical: every p equal, not close.
    assert len(predictions) == len(rows)
    assert {p["id"]: p["p"] for p in predictions} == expected
    for prediction in predictions:
        assert prediction["y_pred"] == int(prediction["p"] >= 0.5)
    assert [p["offset"] for p in predictions] == list(range(len(rows)))
    assert {p["partition"] for p in predictions} == {0}


@pytest.mark.parametrize("hash_bits", [None, 6], ids=["by-name", "hash6"])
def test_categorical_events_get_rivers_predictions_on_the_contracts_features(
    kafka, topics, client, hash_bits
):
    """Strings and lists of strings, sent as JSON and msgpack: each prediction is
    river's progressive one on the one-hot features the contract makes of them
    (hashed into 64 slots with --hash-bits 6)."""
    from tests.unit.test_categorical_paths import categorical_rows

    create_topics(kafka, topics, partitions=1)
    rows = categorical_rows(3000, seed=2)
    send_raw(
        kafka,
        topics.features,
        ((None, encode(row, ("msgpack", "json")[i % 2])) for i, row in enumerate(rows)),
    )

    model = ModelSettings(hash_bits=hash_bits)
    with WorkerThread(worker_settings(kafka, topics, client=client, model=model)):
        predictions = read_predictions(kafka, topics.predictions, {row["id"] for row in rows})

    reference = OnlineModel(model)
    featurize = featurizer(hash_bits)
    expected = {}
    for row in rows:
        x = featurize(features(row["x"], row["id"]))
        expected[row["id"]] = reference.predict_proba(x)
        reference.learn(x, bool(row["y"]))

    assert len(predictions) == len(rows)
    assert {p["id"]: p["p"] for p in predictions} == expected  # bit for bit
    names = set(reference.state().weights)
    if hash_bits is None:
        assert any(name.startswith("tags=") for name in names)
    else:
        assert names <= {str(slot) for slot in range(2**hash_bits)}
