"""The worker's side of the protocol: its replica of the global model.

A worker learns on a local model that is always "a global version plus what
this life learned that the merger has not applied yet". :class:`Replica`
holds that model and everything that keeps the equation true:

- which global version it is based on (``epoch``, ``version``);
- the contributions sent but not yet settled (``pending``, in the order
  sent), each with the delta it carried;
- the model's state at the last cut (``cut_state``), so that the next
  contribution carries exactly what was learned since;
- how much was learned since that cut, and when it was made (when the next
  one is due).

It *cuts* (sends what was learned since the last cut, covering the
ledger's open ranges), *syncs* (takes a newer version, the still pending
deltas added on top), *rebases* (becomes exactly a version, dropping
un-merged learning, and restarts the partitions at the model's offsets) and
*takes over* partitions at assignment. The worker calls it between batches
and from its rebalance callbacks; it knows the ledger, the producer (for
contributions), the consumer (to seek and read committed offsets) and the
model feed, never the worker.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection
from dataclasses import replace
from typing import TYPE_CHECKING

from stream.config import WorkerSettings
from stream.errors import DeliveryError
from stream.faults import CrashPoints
from stream.kafka.transport import Consumer, Producer
from stream.model.merge import (
    KEYED,
    FtrlParams,
    add,
    ftrl_params,
    keys_of,
    restrict,
    subtract,
)
from stream.model.state import ModelState
from stream.sync.checkpoint import Snapshot
from stream.sync.contribution import Contribution
from stream.sync.feed import ModelFeed
from stream.sync.fence import check_compatible
from stream.sync.ledger import Ledger
from stream.sync.pending import Pending, Settled, settle

if TYPE_CHECKING:
    from stream.model.kernel import KernelModel
    from stream.model.online import OnlineModel

    Model = OnlineModel | KernelModel

logger = logging.getLogger(__name__)


class Replica:
    """A worker life's local model: a global version plus its pending contributions.

    ``name`` (the worker's, for logs) and ``life`` (what contributions carry)
    identify it; ``ledger`` and ``crash`` are the worker's own. ``consumer``,
    ``producer`` and ``feed`` may come later (:meth:`attach`): the worker
    connects them in ``run()``.
    """

    def __init__(
        self,
        settings: WorkerSettings,
        name: str,
        life: str,
        model: OnlineModel | KernelModel,
        ledger: Ledger,
        crash: CrashPoints,
        *,
        consumer: Consumer | None = None,
        producer: Producer | None = None,
        feed: ModelFeed | None = None,
    ) -> None:
        self.settings = settings
        self.name = name
        self.life = life
        self._model = model
        # True when the model may differ from cut_state at keys it has not
        # touched (a new model object): the next cut and sync are whole.
        self._whole = False
        # Keys the model touched since the last sync, up to the last cut.
        self._unsynced: set[str] = set()
        self.ledger = ledger
        self.consumer = consumer
        self.producer = producer
        self.feed = feed
        self._crash = crash
        # The global model version the local model is based on: (epoch, version).
        self.epoch = 0
        self.version = 0
        self.created_at = 0.0
        self.seq = 0
        self.pending: list[Pending] = []
        self.cut_state = model.state()
        model.clear_touched()
        self.labeled_since_cut = 0
        self.last_cut = time.monotonic()
        self._ftrl = ftrl_params(settings.model)

    @property
    def model(self) -> OnlineModel | KernelModel:
        """The local model: the version ``order`` plus the pending deltas, plus
        what was learned since the last cut."""
        return self._model

    @model.setter
    def model(self, model: OnlineModel | KernelModel) -> None:
        """A new model (after drift, ``--on-drift reset``): its state is not the
        cut state plus what it touched, so the next cut and sync are whole."""
        self._model = model
        self._whole = True

    def attach(self, consumer: Consumer, producer: Producer, feed: ModelFeed | None) -> None:
        """The clients ``run()`` connected (or was given)."""
        self.consumer, self.producer, self.feed = consumer, producer, feed

    @property
    def order(self) -> tuple[int, int]:
        """(epoch, version) of the global version the local model is based on."""
        return self.epoch, self.version

    def learned(self, n: int) -> None:
        """``n`` labeled events were learned (and acknowledged) since the last cut."""
        self.labeled_since_cut += n

    # -- between batches --------------------------------------------------------

    def step(self, idle: bool) -> None:
        """After a batch (or an empty poll): cut when due, or sync while idle."""
        m = self.settings.merge
        due = self.labeled_since_cut >= m.every_events or (
            time.monotonic() - self.last_cut >= m.interval_s and self.has_open_segment()
        )
        if due:
            self.cut()
        elif idle and not self.has_open_segment():
            self.sync()

    def has_open_segment(self) -> bool:
        return self.labeled_since_cut > 0 or self.ledger.has_open_segment()

    def cut(self, sync: bool = True) -> bool:
        """Send what was learned since the last cut as a contribution, then sync.
        Returns whether one was sent."""
        self.last_cut = time.monotonic()
        if self.ledger.tainted is not None:
            logger.warning(
                "no contribution from a tainted ledger worker=%s reason=%s; its learning is "
                "re-learned from the global model's offsets",
                self.name,
                self.ledger.tainted,
            )
            return False
        ranges = self.ledger.open_ranges()
        if not ranges:
            return False
        assert self.producer is not None
        delta = self._delta()
        contribution = Contribution(
            worker=self.life,
            seq=self.seq,
            base_version=self.version,
            ranges=ranges,
            delta=delta,
            created_at=time.time(),
            opens=self.ledger.opening(ranges),
        )
        # Not flushed here: the next batch's flush acknowledges it (or fails the
        # worker, and the fence makes its successor re-learn those events).
        # Partition 0 by name: the merger reads only that one.
        self.producer.send(
            self.settings.topics.contributions,
            contribution.to_bytes(),
            self.life.encode(),
            partition=0,
        )
        self.pending.append(Pending(self.seq, ranges, delta, contribution.opens))
        self.seq += 1
        self.ledger.contributed(ranges)
        self.labeled_since_cut = 0
        logger.debug(
            "contribution sent worker=%s seq=%d ranges=%s n=%d",
            self.name,
            contribution.seq,
            ranges,
            delta.n_learned,
        )
        producer = self.producer
        self._crash.hit(
            "worker.after_contribution_sent",
            lambda: producer.flush(self.settings.delivery_timeout_s),
        )
        if sync:
            self.sync()
        return True

    def _delta(self) -> ModelState:
        """What was learned since the last cut; the cut state moves to now."""
        if self._whole:
            delta, self.cut_state = cut_whole(self.model, self.cut_state)
        else:
            delta, self.cut_state, touched = cut_touched(self.model, self.cut_state)
            self._unsynced.update(touched)
        return delta

    def announce(self, offsets: dict[int, int]) -> None:
        """Before the first commit past where learning of a partition began (the
        global model not knowing the partition): contribute and flush, so that a
        successor finds the origin in the model's offsets once the merger has
        applied it, rather than only the committed offset past it."""
        if not set(self.ledger.unannounced()) & set(offsets):
            return
        if self.cut(sync=False):
            assert self.producer is not None
            self.producer.flush(self.settings.delivery_timeout_s)

    def sync(self) -> None:
        """Take a newer global version, carrying our not-yet-merged learning over.

        Called only between segments (nothing learned since the last cut), so
        the local model is exactly the global one plus the pending deltas.
        """
        assert self.feed is not None
        latest = self.feed.poll()
        if latest is None or latest.order <= self.order:
            return
        settled = settle(self.pending, latest, self.life)
        if settled.rejected:
            logger.warning(
                "contribution rejected by merger worker=%s life=%s seq=%d; re-learning from "
                "version=%d",
                self.name,
                self.life,
                settled.rejected[0].seq,
                latest.version,
            )
            self.rebase(latest)
            self.seek_to_model(latest, self._assignment())
            return
        changed = None if self._whole else self.feed.changed_since(self.order)
        if changed is None:
            self._adopt_whole(latest, settled.pending)
        else:
            self._adopt_changed(latest, settled, changed)
        self._unsynced = set()
        self.pending = settled.pending
        self.epoch, self.version = latest.order
        self.created_at = latest.created_at

    def _adopt_whole(self, latest: Snapshot, pending: list[Pending]) -> None:
        self.cut_state = adopt_whole(self.model, latest.state, pending, self._ftrl)
        self._whole = False

    def _adopt_changed(self, latest: Snapshot, settled: Settled, changed: frozenset[str]) -> None:
        self.cut_state = adopt_changed(
            self.model, self.cut_state, latest.state, settled, changed, self._unsynced, self._ftrl
        )

    def _assignment(self) -> list[int]:
        assert self.consumer is not None
        return self.consumer.assignment()

    # -- rebasing ---------------------------------------------------------------

    def rebase(self, snapshot: Snapshot) -> None:
        """Become exactly the global model; un-merged learning is dropped (the
        caller restarts every partition it keeps at the model's offsets)."""
        check_compatible(snapshot, self.settings.model)
        self.model.load_state(snapshot.state)
        self.model.clear_touched()
        self.cut_state = _owned(snapshot.state)
        self._whole = False
        self._unsynced = set()
        self.pending = []
        self.labeled_since_cut = 0
        self.epoch, self.version = snapshot.order
        self.created_at = snapshot.created_at
        self.ledger.rebased()

    def seek_to_model(self, snapshot: Snapshot, partitions: list[int]) -> None:
        """Read each partition again from where the global model stopped learning."""
        assert self.consumer is not None
        self.consumer.seek(self.learning_starts(snapshot, partitions))

    def learning_starts(self, snapshot: Snapshot, partitions: list[int]) -> dict[int, int | None]:
        """Restart the ledger of ``partitions`` at the model's offsets; return where
        to read each (None: its beginning). A partition the model never learned
        from starts where this worker first read it; failing that, at its
        beginning, or, with ``--from latest``, where the group's offset (or
        the reset policy) puts it: such a partition is left out. (A takeover
        re-assigns the ledger, so there the first read is the model's offset or
        the policy's.)"""
        starts: dict[int, int | None] = {}
        for p in partitions:
            start = self.ledger.restart(p, snapshot.offsets.get(p))
            if start is not None:
                starts[p] = start
            elif self.settings.auto_offset_reset == "earliest":
                starts[p] = None
        logger.info(
            "learning resumes worker=%s epoch=%d version=%d from=%s",
            self.name,
            snapshot.epoch,
            snapshot.version,
            {
                p: "beginning" if starts.get(p, 0) is None else starts.get(p, "group offset")
                for p in sorted(partitions)
            },
        )
        return starts

    # -- rebalances ---------------------------------------------------------------

    def start(self) -> None:
        """At the start of a life: rebase onto the newest version already published."""
        assert self.feed is not None
        initial = self.feed.initial()
        if initial is not None:
            self.rebase(initial)

    def hand_over(self) -> None:
        """Partitions are revoked: contribute what was learned (the batch is
        committed) and flush it before the next owner starts from the model's
        offsets. No sync: a resync seeks, and partitions are changing hands."""
        self.cut(sync=False)
        assert self.producer is not None
        try:
            self.producer.flush(self.settings.delivery_timeout_s)
        except DeliveryError as exc:
            # The next owner re-learns from the model's offsets; this worker's
            # model holds a delta nobody will merge, until its next rebase.
            self.ledger.taint(f"hand-over contribution not acknowledged: {exc}")
        self._crash.hit("worker.on_revoke_after_contribution")

    def drop_lost(self, lost: list[int]) -> None:
        """Partitions were lost (the ledger forgot them): another member may own
        them already, so contributing would race it; rebase onto the newest
        version and re-read the partitions kept from the model's offsets."""
        if self.feed is None:
            return
        snapshot = self.feed.poll() or Snapshot(version=0, state=ModelState())
        self.rebase(snapshot)
        kept = [p for p in self._assignment() if p not in lost]
        if kept:
            self.seek_to_model(snapshot, kept)

    def take_over(self, assigned: list[int]) -> dict[int, int | None]:
        """Rebase onto the newest global model and restart *every* partition held
        at its offsets: the rebase dropped un-merged learning of the partitions
        kept as well (with incremental rebalancing, those are not in ``assigned``)."""
        feed, consumer = self.feed, self.consumer
        assert feed is not None and consumer is not None
        target = feed.contributions_end()
        if not feed.wait_caught_up(target, self.settings.merge.catch_up_timeout_s):
            logger.warning(
                "merger has not caught up worker=%s contributions_end=%d; continuing at version=%s",
                self.name,
                target,
                feed.latest.version if feed.latest else None,
            )
        snapshot = feed.latest or Snapshot(version=0, state=ModelState())
        self.rebase(snapshot)
        held = sorted(set(assigned) | set(self.ledger.partitions))
        for p, committed in consumer.committed(held).items():
            self.ledger.assign(p, snapshot.offsets.get(p), committed)
        return self.learning_starts(snapshot, held)


def _owned(state: ModelState) -> ModelState:
    """A copy of ``state`` whose maps the replica may change in place (a
    snapshot's state is shared with the feed)."""
    return ModelState(
        intercept=state.intercept,
        n_learned=state.n_learned,
        **{m: dict(getattr(state, m)) for m in KEYED},
    )


def _patched(cut_state: ModelState, now: ModelState, keys: Collection[str]) -> ModelState:
    """``cut_state`` with ``now``'s values at ``keys`` (absent in ``now``:
    removed) and ``now``'s intercept and ``n_learned``; the maps are changed
    in place (the replica owns them, see :func:`_owned`). ``now`` holds no
    key outside ``keys`` (it is a restriction to them)."""
    keyset = keys if isinstance(keys, (set, frozenset)) else set(keys)
    for m in KEYED:
        target: dict[str, float] = getattr(cut_state, m)
        source: dict[str, float] = getattr(now, m)
        target.update(source)
        if target:
            for k in (target.keys() & keyset) - source.keys():
                del target[k]
    return replace(cut_state, intercept=now.intercept, n_learned=now.n_learned)


# -- cutting and adopting, whole or by what changed ---------------------------------
# Pure but for the model they load into and the cut state whose maps they update.


def cut_whole(model: Model, cut_state: ModelState) -> tuple[ModelState, ModelState]:
    """The delta learned since ``cut_state`` and the new cut state, over the whole
    model (O(model): what a cut cost before :func:`cut_touched`)."""
    state = model.state()
    delta = subtract(state, cut_state)
    model.clear_touched()
    return delta, state


def cut_touched(model: Model, cut_state: ModelState) -> tuple[ModelState, ModelState, list[str]]:
    """:func:`cut_whole`'s delta and cut state, in time proportional to the keys
    the model touched since the last cut (the cut state's maps are updated in
    place); and those keys (a prediction may have touched one that no delta
    holds: the next sync recomputes it, see :func:`adopt_changed`).

    The model changed only at the keys it touched since the last cut
    (elsewhere its state is the cut state's, value for value), and
    :func:`subtract` works key by key (intercept and count aside), so the delta
    over those keys is exactly the whole one (tests/unit/test_replica.py)."""
    keys = model.touched_keys()
    now = model.state_of(keys)
    delta = subtract(now, restrict(cut_state, keys))
    model.clear_touched()
    return delta, _patched(cut_state, now, keys), keys


def adopt_whole(
    model: Model, version: ModelState, pending: list[Pending], ftrl: FtrlParams | None
) -> ModelState:
    """Load ``version`` plus the ``pending`` deltas (in order) into ``model``;
    returns the new cut state (O(model))."""
    state = version
    for contribution in pending:
        state = add(state, contribution.delta, ftrl=ftrl)
    model.load_state(state)
    model.clear_touched()
    # add() made new maps; the version's own are the feed's.
    return state if pending else _owned(state)


def adopt_changed(
    model: Model,
    cut_state: ModelState,
    version: ModelState,
    settled: Settled,
    changed: Collection[str],
    touched: Collection[str],
    ftrl: FtrlParams | None,
) -> ModelState:
    """What :func:`adopt_whole` does, recomputed only at the keys where its
    result can differ from the local model: in time proportional to what
    changed, with the same floats (tests/unit/test_replica.py). ``settled``:
    the pending deltas judged by the new version; ``changed``: the keys the
    versions after the one held changed (the feed's
    :meth:`~stream.sync.feed.ModelFeed.changed_since`); ``touched``: the keys
    the model touched since the last sync, up to the last cut (those since it
    the model itself knows). Returns the new cut state (``cut_state``'s maps
    updated in place).

    Called between segments, when the local model is, key by key, the version
    held plus the pending deltas that touch the key (in ``add``'s arithmetic
    where a delta was added at a sync, as learned where it was not yet). Take
    a key outside all of

    - ``changed``, so the new version's state there is the old one's;
    - the keys of the deltas settled as applied: merged into a version after
      the one held (one merged at or before it was settled at that sync), so
      a pending delta merged into the new version touched only keys in
      ``changed``; counted anyway, as a merge that leaves a value as it was
      leaves no trace in a diff;
    - the keys of the deltas still pending, whose sum is recomputed;
    - the keys the model touched since the last sync (a prediction inserts a
      scaler variance that no delta holds).

    No delta touched it since the version held, nothing was learned there,
    and the new version did not change it: the local state there is the new
    version's, which is what ``add`` gives, as it leaves a key no delta holds
    as it is. So only those keys are recomputed, by the same ``add`` calls on
    the restricted states (``add`` works key by key), and loaded.
    """
    keys = set(changed)
    for contribution in settled.applied:
        keys |= keys_of(contribution.delta)
    for contribution in settled.pending:
        keys |= keys_of(contribution.delta)
    keys.update(touched)
    keys.update(model.touched_keys())
    state = restrict(version, keys)
    for contribution in settled.pending:
        state = add(state, contribution.delta, ftrl=ftrl)
    model.load_partial(state, keys)
    model.clear_touched()
    return _patched(cut_state, state, keys)
