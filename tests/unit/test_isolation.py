"""Per-record isolation: what one record makes raise (the batch decoder, the kernel,
the encoder, the producer's send) costs that record a ``processing_error`` dead
letter, and the rest of its batch is processed as if it were not there.

The poisoned workers are compared with a reference worker that reads the same
batches with each poisoned record replaced by a tombstone (a record that is
dead-lettered and never learned): both must send the same predictions, byte
for byte, commit the same offsets and end with the same model, so each valid
labeled event is learned exactly once and the poisoned one never.
"""

from __future__ import annotations

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.config import MergeSettings, ModelSettings, WorkerSettings
from stream.events import batch as batch_module
from stream.events.codec import PROCESSING_ERROR, UNDECODABLE
from stream.kafka.transport import Record
from stream.model import kernel as kernel_module
from stream.model.kernel import KernelModel
from stream.runtime.isolation import whole_or_each
from stream.runtime.worker import PUBLISHING, Worker
from tests.fakes import FakeConsumer, FakeProducer
from tests.poison import (
    DECODER_POISON,
    KERNEL_POISON,
    DecoderPoisoned,
    KernelPoisoned,
    raising_decode,
    raising_run,
)
from tests.unit.test_worker_compiled import batches

# -- the combinator ------------------------------------------------------------


@given(st.lists(st.integers(0, 20), max_size=30), st.sets(st.integers(0, 20)))
def test_every_item_is_run_once_alone_or_with_its_batch_and_only_poisoned_ones_fail(
    items, poisoned
):
    calls: list[list[int]] = []

    def run(chunk):
        calls.append(list(chunk))
        if poisoned.intersection(chunk):
            raise ValueError(sorted(poisoned.intersection(chunk)))
        return sum(chunk)

    out = list(whole_or_each(items, run))
    assert [item for chunk, _ in out for item in chunk] == items
    if not poisoned.intersection(items):
        assert out == ([(items, sum(items))] if items else [([], 0)])
        return
    failed = [chunk[0] for chunk, result in out if isinstance(result, Exception)]
    assert failed == [item for item in items if item in poisoned]
    assert all(r == chunk[0] for chunk, r in out if not isinstance(r, Exception))


# -- the kernel is all or nothing -------------------------------------------------

_events = st.lists(
    st.tuples(
        st.dictionaries(st.sampled_from("abcdef"), st.floats(-5, 5), min_size=1),
        st.sampled_from([None, False, True]),
    ),
    min_size=1,
    max_size=20,
)


@settings(max_examples=60, deadline=None)
@given(_events, _events, st.integers(0, 19), st.sampled_from(["sgd", "ftrl"]))
def test_a_kernel_batch_that_raises_leaves_the_model_as_it_was(before, events, at, optimizer):
    model = KernelModel(ModelSettings(optimizer=optimizer))
    model.score_and_learn_dicts([x for x, _ in before], [y for _, y in before])
    state = model.state()
    at = at % len(events)
    xs = [dict(x) for x, _ in events]
    xs[at]["poison"] = KERNEL_POISON
    real = kernel_module._run
    kernel_module._run = raising_run(real)
    try:
        with pytest.raises(KernelPoisoned):
            model.score_and_learn_dicts(xs, [y for _, y in events])
    finally:
        kernel_module._run = real
    assert model.state() == state


# -- the worker --------------------------------------------------------------------


def _poisoned_batches(seed: int, poison: bytes, every: int = 23):
    """The test batches with every ``every``-th record and one that is read again
    after the handover replaced by ``poison`` (labeled, valid for the general
    decoder); the same with tombstones; and the poisoned (partition, offset)s."""
    poisoned, reference, offsets = [], [], []
    n = 0
    for batch in batches(seed):
        a: dict[int, list[Record]] = {}
        b: dict[int, list[Record]] = {}
        for partition, records in batch.items():
            for record in records:
                n += 1
                if n % every == 0 or (partition, record.offset) == (1, 3):
                    offsets.append((partition, record.offset))
                    a.setdefault(partition, []).append(record._replace(value=poison))
                    b.setdefault(partition, []).append(record._replace(value=None))
                else:
                    a.setdefault(partition, []).append(record)
                    b.setdefault(partition, []).append(record)
        poisoned.append(a)
        reference.append(b)
    return poisoned, reference, offsets


def _run(model_impl: str, batches_: list, producer: FakeProducer | None = None) -> Worker:
    settings = WorkerSettings(
        model=ModelSettings(), model_impl=model_impl, merge=MergeSettings(enabled=False)
    )
    worker = Worker(
        settings,
        "w-test",
        clock=lambda: 1_700_000_001.0,
        consumer=FakeConsumer(),
        producer=producer if producer is not None else FakeProducer(),
    )
    worker._co_partitioned = True
    # Partition 1 was handed over: offsets below 10 already have predictions.
    for partition, committed in ((0, None), (1, 10), (2, None)):
        worker.ledger.assign(partition, model_offset=None, committed=committed)
    for batch in batches_:
        worker._process(batch)
    return worker


def _letters(worker: Worker) -> dict[tuple[int, int], tuple[str, str]]:
    out = {}
    for topic, _, _, headers, _ in worker._producer.sent:
        if topic.endswith(".dlq"):
            h = {k: v.decode() for k, v in headers}
            key = (int(h["learnstream.partition"]), int(h["learnstream.offset"]))
            out[key] = (h["learnstream.reason"], h["learnstream.error"])
    return out


def _predictions(worker: Worker) -> list:
    return [sent for sent in worker._producer.sent if sent[0] == "predictions"]


POISONS = {
    "kernel": (
        msgpack.packb({"id": "poison", "x": {"f0": 1.0, "f1": KERNEL_POISON}, "y": 1}),
        raising_run,
        (kernel_module, "_run"),
        f"the kernel raised {KernelPoisoned('kernel poisoned by event 0')!r}",
    ),
    "decoder": (
        msgpack.packb({"id": "poison", "x": {DECODER_POISON.decode(): 1.0}, "y": 0}),
        raising_decode,
        (batch_module.BatchDecoder, "decode"),
        f"the batch decoder raised {DecoderPoisoned('batch decoder poisoned')!r}",
    ),
}


@pytest.mark.parametrize("which", sorted(POISONS))
@pytest.mark.parametrize("seed", [0, 1])
def test_a_record_that_makes_the_compiled_path_raise_is_a_dead_letter_and_its_batch_goes_on(
    monkeypatch, which, seed
):
    value, fault, (owner, attribute), error = POISONS[which]
    poisoned, reference_batches, offsets = _poisoned_batches(seed, value)
    reference = _run("kernel", reference_batches)
    monkeypatch.setattr(owner, attribute, fault(getattr(owner, attribute)))
    worker = _run("kernel", poisoned)
    assert isinstance(worker.model, KernelModel)

    assert _predictions(worker) == _predictions(reference)
    assert worker._consumer.commits == reference._consumer.commits
    assert worker.model.state() == reference.model.state()
    assert (worker.n_scored, worker.n_learned, worker.n_refused) == (
        reference.n_scored,
        reference.n_learned,
        reference.n_refused,
    )
    # Every poisoned record is dead-lettered (but those read again after the
    # handover, below offset 10 of partition 1: the previous owner did that).
    letters, expected = _letters(worker), _letters(reference)
    replayed = {(p, o) for p, o in offsets if p == 1 and o < 10}
    assert replayed and len(offsets) - len(replayed) >= 3
    for key in offsets:
        if key in replayed:
            assert key not in letters
        else:
            assert expected[key][0] == UNDECODABLE  # the tombstone
            expected[key] = (PROCESSING_ERROR, error)
    assert letters == expected


class _RefusingProducer(FakeProducer):
    """Raises when asked to send the prediction of one event, as a client can
    (a record too large, a serializer bug)."""

    def send(self, topic, value, key=None, headers=None, partition=None) -> None:
        if topic == "predictions" and key == b"e-0-5":
            raise ValueError("cannot send this one")
        super().send(topic, value, key, headers, partition)


@pytest.mark.parametrize("model_impl", ["river", "kernel"])
def test_a_prediction_the_producer_refuses_is_a_dead_letter_and_the_event_is_still_learned(
    model_impl,
):
    reference = _run(model_impl, batches(0))
    worker = _run(model_impl, batches(0), _RefusingProducer())
    refused = [s for s in _predictions(reference) if s[2] == b"e-0-5"]
    assert len(refused) == 1
    assert _predictions(worker) == [s for s in _predictions(reference) if s[2] != b"e-0-5"]
    expected = _letters(reference)
    expected[(0, 5)] = (PROCESSING_ERROR, f"{PUBLISHING} raised ValueError('cannot send this one')")
    assert _letters(worker) == expected
    assert worker.model.state() == reference.model.state()
    assert worker.n_learned == reference.n_learned
    assert worker.n_scored == reference.n_scored - 1


def test_the_poisons_are_what_they_claim():
    """The kernel fault really leaves a half-learned model behind it (were it
    not undone), and the decoder fault's record is one the general decoder takes."""
    from stream.events.codec import decode_event

    assert decode_event(POISONS["decoder"][0]).y is False
    model = KernelModel(ModelSettings())
    fresh = model.state()
    run = raising_run(kernel_module._run)
    columns = np.array([model.column("f0"), model.column("f0"), model.column("f1")])
    with pytest.raises(KernelPoisoned):
        run(columns, np.array([1.0, 2.0, KERNEL_POISON]), np.array([0, 1, 3]),
            np.array([1, 1], np.int8), np.empty(2), model._w, model._cnt, model._mean,
            model._var, model._z, model._n, model._has, model._intercept, model._scratch,
            model._saved, model._saved_has, *model._params)  # fmt: skip
    assert model.state() != fresh
