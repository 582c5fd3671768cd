"""Follow the model topic: the newest global model version, as it is published."""

from __future__ import annotations

import logging
import time
from collections import deque

from stream.config import ClientName, KafkaSettings, TopicSettings
from stream.errors import CheckpointError
from stream.kafka import connect
from stream.kafka.transport import Reader, ReadRecord
from stream.sync.chain import KIND_DELTA, KIND_SNAPSHOT, DeltaVersion, Header, apply_delta, peek
from stream.sync.checkpoint import Snapshot

logger = logging.getLogger(__name__)

# How many of the model topic's last versions a feed reads at least at start
# (a version is one record, or two: its delta and its snapshot); it reads
# further back (doubling) until it also has the newest snapshot of the newest
# epoch. A zombie merger checks its assignment before each publish, so it can
# publish at most the version it was computing when it lost its partition:
# reading this many keeps its last writes from hiding the active merger's.
TAIL = 4
# How long the first poll may take to read the topic's tail.
LOCATE_TIMEOUT_S = 10.0
# changed_since remembers the key sets of at most this many versions, holding
# at most about this many keys in all (a version may change a whole model).
CHANGES_KEPT_VERSIONS = 64
CHANGES_KEPT_KEYS = 1 << 21


class ModelFeed:
    """Reads the single-partition model topic without a group, through the transport.

    Versions are ordered by (epoch, version): one from an older epoch (a
    fenced, zombie merger) never replaces a newer one.

    The topic holds full snapshots and delta versions (:mod:`stream.sync.chain`).
    The first poll reads back from the end, :data:`TAIL` records and then
    further, until it has the newest snapshot of the newest epoch; it starts
    there and applies the deltas that follow. Every version is published in
    its own request (the merger flushes after each), so the end offset from
    ListOffsets is exact even on the embedded broker, whose ListOffsets is
    wrong only for multi-record batches.

    A delta is applied IN PLACE to the version held (time proportional to the
    keys it changed): the :class:`Snapshot` this feed returned before shares
    its maps with the new one, so a caller that keeps a version across polls
    keeps a copy (:func:`~stream.model.merge.copy_state`). A delta that does
    not follow the version held (a gap: a skipped record, a missed snapshot)
    is not applied; the feed goes back to the newest snapshot on the topic if
    there is a newer one than it started from, else keeps the version held
    until the next snapshot; gaps are counted (:attr:`n_gaps`) and logged. A
    snapshot of a version held already is skipped by its header, unread.
    """

    def __init__(
        self,
        kafka: KafkaSettings,
        topics: TopicSettings,
        client_id: str,
        client: ClientName = "confluent",
        reader: Reader | None = None,
        *,
        contributions: Reader | None = None,
    ) -> None:
        """``reader``: of the model topic, ``contributions``: of the contributions
        topic (tests pass fakes); made from ``kafka`` when None."""
        self.topics = topics
        self.latest: Snapshot | None = None
        # Model records skipped as malformed or impossible.
        self.n_invalid = 0
        # Deltas that did not follow the version held.
        self.n_gaps = 0
        self._kafka, self._client, self._client_id = kafka, client, client_id
        self._reader = reader or connect.reader(client, kafka, topics.model, f"{client_id}-feed")
        self._end_at_start = self._reader.end_offset(0)
        self._located = False
        self._queue: deque[ReadRecord] = deque()
        # Where the snapshot the held chain started from is (None: none yet).
        self._base_offset: int | None = None
        # After a gap: deltas wait for the next snapshot.
        self._broken = False
        # Key sets of the versions applied as deltas, oldest first, and the
        # version from which they are known (changed_since's memory).
        self._changes: deque[tuple[int, frozenset[str]]] = deque()
        self._changes_keys = 0
        self._floor: tuple[int, int] | None = None
        # Snapshots the last search already decoded, or found invalid, by offset.
        self._decoded: dict[int, Snapshot] = {}
        self._failed: dict[int, CheckpointError] = {}
        self._contributions: Reader | None = contributions

    def poll(self, timeout_ms: int = 0) -> Snapshot | None:
        """Read what has arrived; return the newest version known (or None).

        A record that is not a possible model version (malformed, impossible,
        not finite: see :meth:`Snapshot.from_bytes`,
        :meth:`~stream.sync.chain.DeltaVersion.from_bytes`) is skipped, counted
        in :attr:`n_invalid` and logged with its offset; it never replaces the
        version held, so one bad record cannot wedge a worker, ``serve`` or a
        takeover, nor make every prediction NaN.
        """
        if not self._located:
            self._located = True
            self._queue.extend(self._locate(time.monotonic() + LOCATE_TIMEOUT_S))
        else:
            self._queue.extend(self._reader.poll(timeout_ms, 1000))
        while self._queue:
            self._take(self._queue.popleft())
        return self.latest

    def initial(self, timeout_s: float = 10.0) -> Snapshot | None:
        """The newest version already on the topic when the feed started."""
        if not self._located:
            self._located = True
            self._queue.extend(self._locate(time.monotonic() + timeout_s))
        return self.poll()

    def changed_since(self, order: tuple[int, int]) -> frozenset[str] | None:
        """The model keys changed by the versions after ``order`` (an ``(epoch,
        version)`` this feed returned) up to the newest one held; None when the
        feed cannot tell, and the caller must treat every key as changed.

        "Changed" is every key an applied delta wrote, whether or not its
        value ended up different, so a holder of the version ``order`` can
        rebuild exactly those keys. An empty set: nothing newer is held.
        None: ``order`` is from another epoch, a full snapshot replaced the
        chain since (a takeover, a gap), or it is older than the versions whose
        key sets the feed remembers (:data:`CHANGES_KEPT_VERSIONS`).
        """
        latest = self.latest
        if latest is None or order[0] != latest.epoch or order[1] > latest.version:
            return None
        if order == latest.order:
            return frozenset()
        if self._floor is None or order < self._floor:
            return None
        keys: set[str] = set()
        for version, changed in self._changes:
            if version > order[1]:
                keys |= changed
        return frozenset(keys)

    # -- reading the chain ---------------------------------------------------

    def _take(self, record: ReadRecord) -> None:
        failed = self._failed.pop(record.offset, None)
        if failed is not None:
            self._invalid(record, failed)
            return
        decoded = self._decoded.pop(record.offset, None)
        header = peek(record.value)
        latest = self.latest
        if header is not None and latest is not None and header.order <= latest.order:
            if header.epoch < latest.epoch:
                logger.warning(
                    "version from a fenced merger ignored epoch=%d version=%d current_epoch=%d",
                    header.epoch,
                    header.version,
                    latest.epoch,
                )
            return  # held already (a snapshot of a version taken as a delta) or older
        if header is not None and header.kind == KIND_DELTA:
            self._take_delta(record, header)
            return
        try:
            snapshot = decoded or Snapshot.from_bytes(record.value)  # type: ignore[arg-type]
        except CheckpointError as exc:
            self._invalid(record, exc)
            return
        if latest is not None and snapshot.order <= latest.order:
            return
        self.latest = snapshot
        self._base_offset = record.offset
        self._broken = False
        self._changes.clear()
        self._changes_keys = 0
        self._floor = snapshot.order

    def _take_delta(self, record: ReadRecord, header: Header) -> None:
        latest = self.latest
        if self._broken and (latest is None or header.epoch == latest.epoch):
            return  # waiting for the next snapshot
        if latest is None or (header.epoch, header.follows) != latest.order:
            self._gap(record, header)
            return
        try:
            delta = DeltaVersion.from_bytes(record.value)
        except CheckpointError as exc:
            self._invalid(record, exc)
            return
        if (delta.epoch, delta.follows) != latest.order:  # a header that lied
            self._gap(record, header)
            return
        self.latest = apply_delta(latest, delta)
        keys = delta.keys
        self._changes.append((delta.version, keys))
        self._changes_keys += len(keys)
        while self._changes and (
            len(self._changes) > CHANGES_KEPT_VERSIONS or self._changes_keys > CHANGES_KEPT_KEYS
        ):
            version, dropped = self._changes.popleft()
            self._changes_keys -= len(dropped)
            self._floor = (delta.epoch, version)

    def _gap(self, record: ReadRecord, header: Header) -> None:
        """A delta that does not follow the version held: go back to the newest
        snapshot on the topic, if it is not the one the chain held started
        from (or one tried already); otherwise wait for the next snapshot."""
        self.n_gaps += 1
        held = self.latest.order if self.latest is not None else None
        logger.warning(
            "model delta does not follow the version held topic=%s offset=%d epoch=%d "
            "version=%d follows=%s held=%s; going back to the newest snapshot",
            self.topics.model,
            record.offset,
            header.epoch,
            header.version,
            header.follows,
            held,
        )
        located = self._locate(time.monotonic() + LOCATE_TIMEOUT_S, before=record.offset)
        self._queue.clear()
        start = located[0] if located else None
        if start is not None and _is_snapshot(start) and start.offset != self._base_offset:
            # Read again from there (records after it held already are skipped
            # by their headers); the gap's delta is among what follows.
            self._queue.extend(located)
            self._base_offset = start.offset
            self._broken = False
            return
        # Nothing newer to go back to: keep the version held; deltas wait for
        # the next snapshot. What was read after the gap's delta is still taken.
        self._queue.extend(r for r in located if r.offset > record.offset)
        self._broken = True

    def _invalid(self, record: ReadRecord, exc: CheckpointError) -> None:
        self.n_invalid += 1
        logger.error(
            "model record skipped topic=%s offset=%d error=%s",
            self.topics.model,
            record.offset,
            exc,
        )

    def _locate(self, deadline: float, before: int | None = None) -> list[ReadRecord]:
        """The records from the newest valid snapshot of the newest epoch to the
        end, reading back from the end, :data:`TAIL` records and then twice as
        many each time, until at least :data:`TAIL` versions are seen too.
        Only headers are read (:func:`peek`), and only the snapshots that
        would be newer than the best found so far are decoded, newest first,
        so a superseded snapshot is never unpacked. With no
        snapshot of the newest epoch anywhere, the newest valid one; with
        none at all, every record read. ``before``: a record known to be there
        (a gap's delta): the search reads back from it at least. The reader is
        left after the last record returned.

        A snapshot that fails validation here is counted and logged when the
        records are taken, in offset order (at once if it lies before the start)."""
        self._decoded.clear()
        self._failed.clear()
        end = self._reader.end_offset(0)
        got: list[ReadRecord] = []
        headers: dict[int, Header | None] = {}
        hi: int | None = None  # None: the first window reads to the end and on
        window = TAIL
        resume = end
        best: tuple[int, Snapshot] | None = None  # (offset, decoded)
        failed: dict[int, CheckpointError] = {}
        while True:
            lo = max(0, end - window)
            if before is not None:
                lo = min(lo, before)
            if hi is None or lo < hi:
                part = self._read(lo, hi, end, deadline)
                if hi is None:
                    resume = self._reader.position(0)
                got = part + [r for r in got if hi is None or r.offset >= hi]
                hi = lo
            values = {r.offset: r.value for r in got}
            for offset, value in values.items():
                if offset not in headers:
                    headers[offset] = peek(value)
            known = [h for h in headers.values() if h is not None]
            snapshots = sorted(
                (
                    (h.order, offset)
                    for offset, h in headers.items()
                    if h is not None and h.kind == KIND_SNAPSHOT and offset not in failed
                ),
                reverse=True,
            )
            for order, offset in snapshots:
                if best is not None and order <= best[1].order:
                    break
                try:
                    best = (offset, Snapshot.from_bytes(values[offset]))  # type: ignore[arg-type]
                    break
                except CheckpointError as exc:
                    failed[offset] = exc
            newest_epoch = max((h.epoch for h in known), default=None)
            versions = len({h.order for h in known})
            if best is not None and best[1].epoch == newest_epoch and versions >= TAIL:
                break
            if lo == 0 or time.monotonic() >= deadline:
                break
            window *= 2
        if hi is not None and hi < end:
            self._reader.assign({0: resume})
        start = best[0] if best is not None else None
        for offset in sorted(failed):
            record = next(r for r in got if r.offset == offset)
            if start is not None and offset < start:
                self._invalid(record, failed[offset])
            else:
                self._failed[offset] = failed[offset]
        if best is not None:
            self._decoded[best[0]] = best[1]
            return [r for r in got if r.offset >= best[0]]
        return got

    def _read(self, lo: int, hi: int | None, end: int, deadline: float) -> list[ReadRecord]:
        """Records from offset ``lo`` up to ``hi`` (None: to ``end`` at least, and
        whatever else the polls return)."""
        target = end if hi is None else hi
        self._reader.assign({0: lo})
        out: list[ReadRecord] = []
        if lo >= target:
            return out
        while True:
            out.extend(r for r in self._reader.poll(100, 1000) if hi is None or r.offset < hi)
            if self._reader.position(0) >= target or time.monotonic() >= deadline:
                return [r for r in out if r.offset >= lo]

    def contributions_end(self) -> int:
        """How many contributions have been published (the merger's catch-up target)."""
        if self._contributions is None:
            self._contributions = connect.reader(
                self._client, self._kafka, self.topics.contributions, f"{self._client_id}-feed"
            )
        return self._contributions.end_offset(0)

    def wait_caught_up(self, target: int, timeout_s: float) -> bool:
        """Wait until a version reflects every contribution below ``target``."""
        deadline = time.monotonic() + timeout_s
        while True:
            latest = self.poll(timeout_ms=100)
            if target == 0 or (latest is not None and latest.contributions_offset >= target):
                return True
            if time.monotonic() > deadline:
                return False

    def close(self) -> None:
        self._reader.close()
        if self._contributions is not None:
            self._contributions.close()


def published_model(
    kafka: KafkaSettings,
    topics: TopicSettings,
    client_id: str,
    timeout_s: float = 10.0,
    client: ClientName = "confluent",
    reader: Reader | None = None,
) -> Snapshot | None:
    """The newest version on the model topic right now (None: there is none);
    ``reader``: of the model topic, made from ``kafka`` when None."""
    feed = ModelFeed(kafka, topics, client_id, client, reader)
    try:
        return feed.initial(timeout_s)
    finally:
        feed.close()


def _is_snapshot(record: ReadRecord) -> bool:
    header = peek(record.value)
    return header is not None and header.kind == KIND_SNAPSHOT
