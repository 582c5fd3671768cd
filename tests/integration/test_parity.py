"""One worker, one partition: the pipeline is river's predict-then-learn, exactly."""

from __future__ import annotations

import pytest

from stream.config import ModelSettings
from stream.events.codec import encode, event_to_map
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
