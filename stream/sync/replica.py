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
from typing import TYPE_CHECKING

from stream.config import WorkerSettings
from stream.errors import DeliveryError
from stream.faults import CrashPoints
from stream.kafka.transport import Consumer, Producer
from stream.model.merge import add, ftrl_params, subtract
from stream.model.state import ModelState
from stream.sync.checkpoint import Snapshot
from stream.sync.contribution import Contribution
from stream.sync.feed import ModelFeed
from stream.sync.fence import check_compatible
from stream.sync.ledger import Ledger
from stream.sync.pending import Pending, settle

if TYPE_CHECKING:
    from stream.model.kernel import KernelModel
    from stream.model.online import OnlineModel

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
        self.model = model
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
        self.labeled_since_cut = 0
        self.last_cut = time.monotonic()
        self._ftrl = ftrl_params(settings.model)

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
        state = self.model.state()
        delta = subtract(state, self.cut_state)
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
        self.cut_state = state
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
        self.pending = settled.pending
        state = latest.state
        for contribution in self.pending:
            state = add(state, contribution.delta, ftrl=self._ftrl)
        self.model.load_state(state)
        self.cut_state = state
        self.epoch, self.version = latest.order
        self.created_at = latest.created_at

    def _assignment(self) -> list[int]:
        assert self.consumer is not None
        return self.consumer.assignment()

    # -- rebasing ---------------------------------------------------------------

    def rebase(self, snapshot: Snapshot) -> None:
        """Become exactly the global model; un-merged learning is dropped (the
        caller restarts every partition it keeps at the model's offsets)."""
        check_compatible(snapshot, self.settings.model)
        self.model.load_state(snapshot.state)
        self.cut_state = snapshot.state
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
