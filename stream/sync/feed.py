"""Follow the model topic: the newest global model version, as it is published."""

from __future__ import annotations

import logging
import time

from stream.config import ClientName, KafkaSettings, TopicSettings
from stream.errors import CheckpointError
from stream.kafka import connect
from stream.kafka.transport import Reader
from stream.sync.checkpoint import Snapshot

logger = logging.getLogger(__name__)

# How many of the model topic's last records a feed reads at start. A zombie
# merger checks its assignment before each publish, so it can publish at most
# the version it was computing when it lost its partition; each record is a
# whole model, so the tail is kept short.
TAIL = 4


class ModelFeed:
    """Reads the single-partition model topic without a group, through the transport.

    Versions are ordered by (epoch, version): one from an older epoch (a
    fenced, zombie merger) never replaces a newer one.

    Starts :data:`TAIL` records before the end, so a version a zombie wrote
    after the active merger's last one does not hide that one: every version
    is published in its own request (the merger flushes after each), so the
    end offset from ListOffsets is exact even on the embedded broker, whose
    ListOffsets is wrong only for multi-record batches.
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
        self._kafka, self._client, self._client_id = kafka, client, client_id
        self._reader = reader or connect.reader(client, kafka, topics.model, f"{client_id}-feed")
        end = self._reader.end_offset(0)
        self._reader.assign({0: max(0, end - TAIL)})
        self._end_at_start = end
        self._contributions: Reader | None = contributions

    def poll(self, timeout_ms: int = 0) -> Snapshot | None:
        """Read what has arrived; return the newest snapshot known (or None).

        A record that is not a possible model version (malformed, impossible,
        not finite: see :meth:`Snapshot.from_bytes`) is skipped, counted in
        :attr:`n_invalid` and logged with its offset; it never replaces the
        version held, so one bad record cannot wedge a worker, ``serve`` or a
        takeover, nor make every prediction NaN.
        """
        for record in self._reader.poll(timeout_ms, 1000):
            try:
                snapshot = Snapshot.from_bytes(record.value)
            except CheckpointError as exc:
                self.n_invalid += 1
                logger.error(
                    "model record skipped topic=%s offset=%d error=%s",
                    self.topics.model,
                    record.offset,
                    exc,
                )
                continue
            if self.latest is None or snapshot.order > self.latest.order:
                self.latest = snapshot
            elif snapshot.epoch < self.latest.epoch:
                logger.warning(
                    "version from a fenced merger ignored epoch=%d version=%d current_epoch=%d",
                    snapshot.epoch,
                    snapshot.version,
                    self.latest.epoch,
                )
        return self.latest

    def initial(self, timeout_s: float = 10.0) -> Snapshot | None:
        """The newest version already on the topic when the feed started."""
        if self._end_at_start == 0:
            return self.poll()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.poll(timeout_ms=200)
            if self._reader.position(0) >= self._end_at_start:
                break
        return self.latest

    def changed_since(self, order: tuple[int, int]) -> frozenset[str] | None:
        """The model keys changed by the versions after ``order`` (an ``(epoch,
        version)`` this feed returned) up to the newest one held; None when the
        feed cannot tell, and the caller must treat every key as changed.

        "Changed" is every key an applied delta touched, whether or not its
        value ended up different, so a holder of the version ``order`` can
        rebuild exactly those keys. An empty set: nothing newer is held.
        None: ``order`` is from another epoch, a full snapshot replaced the
        chain since, or it is older than the versions whose key sets the feed
        remembers (a bounded number). Until the model topic carries delta
        versions, every version is a full snapshot and the answer is None
        except for the version held itself.
        """
        if self.latest is not None and order == self.latest.order:
            return frozenset()
        return None

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
