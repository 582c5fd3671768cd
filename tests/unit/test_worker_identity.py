"""Each process life of a worker is its own contributor (issue 16.1), and an
evicted life's entry neither stalls it nor makes it count a delta twice (16.6).

Workers, the merger's fence and the topics run in-process
(:mod:`tests.fakes`); each test replays one interleaving exactly.
"""

from __future__ import annotations

import re

import stream.runtime.supervisor as supervisor_module
import stream.sync.fence as fence_module
from stream.config import WorkerSettings
from stream.model.state import ModelState
from stream.runtime.worker import Worker
from stream.sync.checkpoint import Snapshot
from stream.sync.contribution import Contribution
from tests.fakes import Pipeline, events, labeled_below, read_and_cut


def test_a_restarted_life_under_the_same_name_takes_over_at_a_stale_version_and_keeps_learning():
    pipeline = Pipeline(events(60))
    # The first life contributes one event at a time: the merger's record of
    # its seqs climbs to 8 ...
    old = pipeline.start_life("host-1-w0")
    for _ in range(9):
        read_and_cut(old, 1)
        pipeline.merge()
    assert pipeline.latest.offsets == {0: 9}
    # ... then it sends [9, 12) and is SIGKILLed before the merger merges it.
    read_and_cut(old, 3)
    assert pipeline.latest.offsets == {0: 9}
    # The supervisor restarts it under the same name. The merger has not caught
    # up: the new life takes over at the stale version (offset 9) and re-learns
    # [9, 12) (events it does not predict again: they are committed).
    new = pipeline.start_life("host-1-w0")
    assert new.ledger.partitions[0].contributed == 9
    pipeline.merge()  # the old life's [9, 12): the model is at 12
    read_and_cut(new, 6)  # [9, 15): cut through by the model's offset; re-read from 12
    for _ in range(6):
        pipeline.merge()
        read_and_cut(new, 5)
    pipeline.merge()
    read_and_cut(new, 0)  # sync
    pipeline.merge()
    # Every labeled event read is learned, exactly once.
    assert pipeline.latest.offsets == {0: 42}
    assert pipeline.latest.n_learned == labeled_below(42)
    assert new._consumer.position == 42
    # One re-read, from where the model stood, when the new life saw its
    # first contribution could not be applied.
    assert new._consumer.seeks[1:] == [{0: 12}]
    assert new.model.state().n_learned == pipeline.latest.n_learned
    lives = {c.worker for c in pipeline.contributed()}
    assert lives == {old.life, new.life} and old.life != new.life
    assert all(re.fullmatch(r"host-1-w0~[0-9a-f]{12}", life) for life in lives)


def _crash_loop(pipeline: Pipeline, lives: int, stale: bool = False) -> None:
    """``lives`` lives of another worker each learn one event of partition 1
    (which they have to themselves) and die; 50 are merged to a version. With
    ``stale``, each also sends that event again, which the fence rejects."""
    for i in range(lives):
        life = f"host-2-w0~{i:012x}"
        delta = ModelState(weights={"b": 1.0}, n_learned=1)
        opens = frozenset({1}) if i == 0 else frozenset()  # the first opens partition 1
        pipeline.contribute(Contribution(life, 0, 0, {1: (i, i + 1)}, delta, 0.0, opens))
        if stale:
            pipeline.contribute(Contribution(life, 1, 0, {1: (i, i + 1)}, delta, 0.0))
        if i % 50 == 49:
            pipeline.merge()


def test_two_thousand_lives_evict_a_live_workers_entry_and_it_neither_double_counts_nor_stalls():
    pipeline = Pipeline(events(40))
    live = pipeline.start_life("host-1-w0")
    read_and_cut(live, 10)
    pipeline.merge()  # the live worker's [0, 10) is applied ...
    [life] = pipeline.latest.applied
    # ... then 2,000 lives of a crash-looping worker each learn one event of
    # partition 1 and die, 50 to a version; the live worker hears of none of it.
    _crash_loop(pipeline, 2000)
    latest = pipeline.latest
    assert latest.offsets == {0: 10, 1: 2000}
    assert life not in latest.applied  # evicted
    assert len(latest.applied) == fence_module.MAX_TRACKED_WORKERS
    # It syncs: the offsets say its contribution is in the model, so its local
    # model is exactly the global one, not the global one plus [0, 10) again.
    read_and_cut(live, 0)
    assert live.model_version == latest.version
    assert live.model.state().n_learned == latest.n_learned == labeled_below(10) + 2000
    assert live.replica.pending == []
    # And it keeps learning: the rest of its partition, exactly once.
    for _ in range(3):
        read_and_cut(live, 10)
        pipeline.merge()
    read_and_cut(live, 0)
    assert pipeline.latest.offsets == {0: 40, 1: 2000}
    assert pipeline.latest.n_learned == labeled_below(40) + 2000
    assert live.model.state().n_learned == pipeline.latest.n_learned
    assert live._consumer.seeks[1:] == []  # never re-read anything


def test_a_rejection_whose_entry_was_evicted_is_read_in_the_offsets_and_re_learned_at_once():
    pipeline = Pipeline(events(40))
    live = pipeline.start_life("host-1-w0")
    read_and_cut(live, 10)
    pipeline.merge()
    # A zombie's [10, 15) of the same partition reaches the merger just before
    # the live worker's [10, 20): that one is rejected, ...
    zombie = ModelState(weights={"a": 1.0}, n_learned=labeled_below(15) - labeled_below(10))
    pipeline.contribute(Contribution("host-3-w0~zombie000000", 4, 0, {0: (10, 15)}, zombie, 0.0))
    read_and_cut(live, 10)
    pipeline.merge()
    [life] = pipeline.latest.rejected
    # ... and 2,000 lives, each with a rejection of its own, evict that one
    # before the live worker syncs.
    _crash_loop(pipeline, 2000, stale=True)
    assert life not in pipeline.latest.rejected and life not in pipeline.latest.applied
    # The offsets cut through its range: it re-reads from the model's offset at
    # once, rather than waiting on a contribution that was refused.
    read_and_cut(live, 0)
    assert live._consumer.seeks[1:] == [{0: 15}]
    assert live.model.state().n_learned == pipeline.latest.n_learned
    for _ in range(3):
        read_and_cut(live, 10)
        pipeline.merge()
    read_and_cut(live, 0)
    assert pipeline.latest.offsets == {0: 40, 1: 2000}
    assert pipeline.latest.n_learned == labeled_below(40) + 2000
    assert live._consumer.seeks[1:] == [{0: 15}]


def test_a_version_from_before_lives_loads_and_its_plain_names_judge_no_life():
    pipeline = Pipeline(events(30))
    # Written by a merger from before incarnations: plain worker names, seqs far
    # above anything a new life sends for a while.
    before = Snapshot(
        version=7,
        state=ModelState(weights={"a": 0.5}, n_learned=labeled_below(9)),
        offsets={0: 9},
        contributions_offset=0,
        applied={"host-1-w0": 57},
        rejected={"host-1-w0": 58},
    )
    pipeline.versions.append(Snapshot.from_bytes(before.to_bytes()))
    worker = pipeline.start_life("host-1-w0")
    for _ in range(3):
        read_and_cut(worker, 7)
        pipeline.merge()
    read_and_cut(worker, 0)
    assert pipeline.latest.offsets == {0: 30}
    assert pipeline.latest.n_learned == labeled_below(30)
    assert pipeline.latest.applied == {"host-1-w0": 57, worker.life: 2}
    assert worker.model.state().n_learned == pipeline.latest.n_learned
    assert worker._consumer.seeks[1:] == []


class _Spawned:
    """A process the supervisor starts, without starting anything."""

    def __init__(self, target, args, name, daemon) -> None:
        self.target, self.args, self.pid = target, args, 4242

    def start(self) -> None:
        pass


def test_the_supervisor_restarts_a_worker_under_its_name_as_a_new_life(monkeypatch):
    spawned: list[_Spawned] = []

    class _Spawn:
        Queue = list

        def Process(self, **kwargs):
            spawned.append(_Spawned(**kwargs))
            return spawned[-1]

    monkeypatch.setattr(supervisor_module, "_SPAWN", _Spawn())
    supervisor = supervisor_module.Supervisor(WorkerSettings(), count=1)
    supervisor.start_process("w0")
    first = supervisor.lives["w0"]
    supervisor.start_process("w0")  # the restart
    second = supervisor.lives["w0"]
    name = supervisor.names["w0"]
    assert first != second
    assert first.startswith(f"{name}~") and second.startswith(f"{name}~")
    # Each life's incarnation is handed to the worker process it starts.
    incarnations = [process.args[-1] for process in spawned]
    assert [f"{name}~{incarnation}" for incarnation in incarnations] == [first, second]
    assert Worker(WorkerSettings(), name, incarnation=incarnations[0]).life == first


def test_every_worker_object_is_a_life_of_its_own():
    lives = {Worker(WorkerSettings(), "host-1-w0").life for _ in range(3)}
    assert len(lives) == 3
    assert all(re.fullmatch(r"host-1-w0~[0-9a-f]{12}", life) for life in lives)
