"""The offset fence and the pure steps of merging: what the merger decides, without Kafka.

The global model records, per features partition, the next offset it has not
learned. A contribution is applied only if each of its ranges starts exactly
there; anything else is rejected, so no labeled event is learned twice.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import NamedTuple

from stream.config import KafkaSettings, MergeRule, ModelSettings, TopicSettings
from stream.errors import ConfigError, ContributionError, TopicError
from stream.kafka import topics as kafka_topics
from stream.kafka.transport import Record
from stream.model.merge import FtrlParams, Undo, copy_state, fold
from stream.model.state import ModelState, non_finite
from stream.sync.checkpoint import Snapshot
from stream.sync.contribution import Contribution
from stream.sync.records import Watermarks, show

logger = logging.getLogger(__name__)

# How many worker lives' applied/rejected sequence numbers a snapshot remembers
# at least (it keeps every life it decided itself too). Each process life is
# its own contributor (stream.runtime.identity), so restarts add lives; the
# ones heard from longest ago are dropped. A worker does not depend on its
# entry: its pending contributions are judged by the offsets as well
# (stream.sync.pending), so an evicted live worker neither stalls nor counts
# a merged delta twice.
MAX_TRACKED_WORKERS = 1000


def fence(snapshot_offsets: dict[int, int], contribution: Contribution) -> str | None:
    """Why ``contribution`` cannot be applied on top of these offsets, or None.

    A partition the model has never learned from is opened only by a range
    that starts where the sender's learning of it began (``opens``): that
    range defines where learning began. Any other range of it is rejected, so a
    range sent after a rejected one cannot open the partition past the events
    the rejected one held.
    """
    for partition, (start, end) in contribution.ranges.items():
        if end < start:
            return f"partition {partition}: empty range [{start}, {end})"
        current = snapshot_offsets.get(partition)
        if current is not None and start != current:
            return f"partition {partition}: starts at {start}, model is at {current}"
        opens = contribution.opens
        if current is None and opens is not None and partition not in opens:
            return (
                f"partition {partition}: the model has not learned from it, and [{start}, {end})"
                " does not start where the worker's learning of it began"
            )
    return None


class Changes(NamedTuple):
    """What one version changed, for publishing it as a delta
    (:mod:`stream.sync.chain`): the model keys its applied contributions wrote,
    and the lives it decided with their newest seqs, in the order they were
    last decided (readers fold them in that order, so their bounded maps end
    exactly as the merger's)."""

    keys: frozenset[str]
    applied: dict[str, int]
    rejected: dict[str, int]


def apply_contributions(
    snapshot: Snapshot,
    contributions: list[tuple[int, Contribution]],
    rule: MergeRule,
    next_offset: int,
    ftrl: FtrlParams | None = None,
) -> tuple[Snapshot, int, int]:
    """Pure: the next snapshot after these (contributions-topic offset, contribution)
    pairs, read up to ``next_offset``; plus how many were applied and rejected.
    :func:`fold_contributions` on a copy of the snapshot's state (O(model))."""
    own = replace(snapshot, state=copy_state(snapshot.state))
    next_snapshot, n_applied, n_rejected, _ = fold_contributions(
        own, contributions, rule, next_offset, ftrl
    )
    return next_snapshot, n_applied, n_rejected


def fold_contributions(
    snapshot: Snapshot,
    contributions: list[tuple[int, Contribution]],
    rule: MergeRule,
    next_offset: int,
    ftrl: FtrlParams | None = None,
) -> tuple[Snapshot, int, int, Changes]:
    """The next snapshot after these (contributions-topic offset, contribution)
    pairs, read up to ``next_offset``, computed IN PLACE: ``snapshot``'s state
    maps become the next version's (the caller owns them; ``snapshot`` itself
    must not be used afterwards). Time proportional to the contributions, not
    the model. Also: how many were applied and rejected, and what changed.
    The new version keeps the snapshot's epoch (the merger that computes it).

    Each contribution is applied or rejected on its own, in order, against the
    model as the ones before it left it: fenced out, not finite, or making the
    model not finite (finite deltas whose sum overflows). So whether a
    contribution is learned does not depend on which others the merger happened
    to gather into the same version. A refused fold is undone key by key; the
    model was finite before it, so only the keys a fold wrote (and the
    intercept) can have stopped being finite.
    """
    if rule != "sum":
        raise ValueError(f"merge rule must be 'sum', got {rule!r}")
    offsets = dict(snapshot.offsets)
    applied = dict(snapshot.applied)
    rejected = dict(snapshot.rejected)
    state = snapshot.state
    n_applied = n_rejected = 0
    changed: set[str] = set()
    # The lives this version decides, in the order last decided: it keeps
    # them whatever the bound says, and a delta version carries them.
    decided_applied: dict[str, None] = {}
    decided_rejected: dict[str, None] = {}
    for offset, contribution in contributions:
        reason = fence(offsets, contribution)
        if reason is None:
            bad = non_finite(contribution.delta)
            if bad is not None:
                # Its offsets do not advance: the sender sees the rejection,
                # drops its learning and re-learns those events.
                reason = f"non-finite learning state from worker {contribution.worker}: {bad}"
        if reason is None:
            touched: set[str] = set()
            undo = Undo()
            merged = fold(state, contribution.delta, ftrl=ftrl, touched=touched, undo=undo)
            bad = undo.non_finite()
            if bad is None and not math.isfinite(merged.intercept):
                bad = f"intercept = {merged.intercept!r}"
            if bad is not None:
                # A finite delta whose sum with the model overflows: keep the model
                # as it was rather than publish a poisoned one; the sender re-learns.
                undo.revert()
                reason = f"merge refused: the merged model would not be finite ({bad})"
        if reason is not None:
            _touch(rejected, contribution.worker, contribution.seq)
            _decide(decided_rejected, contribution.worker)
            n_rejected += 1
            logger.warning(
                "contribution rejected worker=%s seq=%d offset=%d reason=%s",
                contribution.worker,
                contribution.seq,
                offset,
                reason,
            )
            continue
        state = merged
        changed |= touched
        for partition, (_, end) in contribution.ranges.items():
            offsets[partition] = end
        _touch(applied, contribution.worker, contribution.seq)
        _decide(decided_applied, contribution.worker)
        n_applied += 1
    next_snapshot = Snapshot(
        epoch=snapshot.epoch,
        version=snapshot.version + 1,
        state=state,
        offsets=offsets,
        contributions_offset=next_offset,
        applied=_newest(applied, len(decided_applied)),
        rejected=_newest(rejected, len(decided_rejected)),
        model_config=snapshot.model_config,
        topic_ids=snapshot.topic_ids,
        created_at=time.time(),
        pipeline=snapshot.pipeline,
    )
    changes = Changes(
        frozenset(changed),
        {life: applied[life] for life in decided_applied},
        {life: rejected[life] for life in decided_rejected},
    )
    return next_snapshot, n_applied, n_rejected, changes


class Merged(NamedTuple):
    """One merge step's outcome: the next version, what became of the records,
    and what the version changed."""

    snapshot: Snapshot
    applied: int
    rejected: int
    invalid: int
    changes: Changes


def merge_records(
    snapshot: Snapshot,
    records: list[Record],
    rule: MergeRule,
    ftrl: FtrlParams | None,
    watermarks: Watermarks | None,
    *,
    in_place: bool = False,
) -> Merged:
    """Pure but for ``watermarks`` (and, ``in_place``, ``snapshot``'s state, which
    becomes the next version's: see :func:`fold_contributions`): decode the
    contributions-topic records, skip the invalid ones, apply the rest.
    ``records`` are consecutive, so the next version has read up to the last one.

    An invalid record (malformed or impossible, see
    :meth:`Contribution.from_bytes`) is skipped, counted and logged with its
    offset and the worker its key names; it is not recorded as rejected (its
    fields cannot be trusted to say whose it is). Skipping it loses nothing: its
    events stay unlearned, its sender's next contribution is fenced out, and the
    sender re-learns them from the model's offsets.
    """
    readable = []
    for record in records:
        try:
            readable.append((record.offset, Contribution.from_bytes(record.value, watermarks)))
        except ContributionError as exc:
            logger.error(
                "contribution skipped offset=%d worker=%s error=%s",
                record.offset,
                show(record.key.decode("utf-8", "replace")) if record.key else None,
                exc,
            )
    n_invalid = len(records) - len(readable)
    if not in_place:
        snapshot = replace(snapshot, state=copy_state(snapshot.state))
    next_snapshot, n_applied, n_rejected, changes = fold_contributions(
        snapshot, readable, rule, next_offset=records[-1].offset + 1, ftrl=ftrl
    )
    return Merged(next_snapshot, n_applied, n_rejected, n_invalid, changes)


def _touch(seqs: dict[str, int], life: str, seq: int) -> None:
    """Record ``life``'s newest seq and move it to the end: the dict's order is
    least recently heard from first, which is what eviction drops."""
    seq = max(seqs.pop(life, -1), seq)
    seqs[life] = seq


def _decide(decided: dict[str, None], life: str) -> None:
    """Move ``life`` to the end of ``decided`` (the order lives were last decided)."""
    decided.pop(life, None)
    decided[life] = None


def _newest(seqs: dict[str, int], decided: int) -> dict[str, int]:
    """The ``MAX_TRACKED_WORKERS`` lives heard from most recently (a worker
    still contributing is never evicted in favour of one that died), and
    every one of the ``decided`` lives this version decided (touched last,
    so at the end): a life learns what became of its contribution from the
    version that decided it, however many lives that version decided."""
    keep = max(MAX_TRACKED_WORKERS, decided)
    if len(seqs) <= keep:
        return seqs
    return dict(list(seqs.items())[-keep:])


def initial_snapshot(model: ModelSettings) -> Snapshot:
    return Snapshot(
        version=0, state=ModelState(), model_config=model.as_dict(), created_at=time.time()
    )


# How long a takeover waits for the broker to report a topic's id that the
# model records: ids are missing only briefly while metadata propagates (well
# under a second) or during a controller failover; longer means the topic is
# gone or not authorized, which an operator must look at.
TOPIC_ID_WAIT_S = 30.0
_TOPIC_ID_RETRY_S = 0.5

# The topics whose ids a snapshot records, by role.
TOPIC_ROLES = ("features", "contributions")


def current_topic_ids(
    kafka: KafkaSettings,
    topics: TopicSettings,
    required: Iterable[str] = (),
    wait_s: float = TOPIC_ID_WAIT_S,
) -> dict[str, str]:
    """The broker's known ids of the topics a snapshot's offsets refer to, by role.

    A topic the broker reports no id for (a metadata error) is left out: it is
    unknown, not recreated. The ``required`` roles (those the model records an
    id for) are asked again until known, for at most ``wait_s`` seconds; then
    :class:`~stream.errors.TopicError` says which topic and why.
    """
    names = {"features": topics.features, "contributions": topics.contributions}
    return resolve_topic_ids(
        lambda: kafka_topics.topic_ids(kafka, names.values()), names, required, wait_s
    )


def resolve_topic_ids(
    read: Callable[[], kafka_topics.TopicIds],
    names: dict[str, str],
    required: Iterable[str] = (),
    wait_s: float = TOPIC_ID_WAIT_S,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, str]:
    """:func:`current_topic_ids` with the broker's answer given by ``read``."""
    required = [role for role in TOPIC_ROLES if role in set(required)]
    deadline = time.monotonic() + wait_s
    attempt = 0
    while True:
        attempt += 1
        answer = read()
        ids = {role: answer.ids[name] for role, name in names.items() if name in answer.ids}
        missing = [role for role in required if role not in ids]
        if not missing:
            return ids
        if time.monotonic() >= deadline:
            detail = ", ".join(
                f"{role} topic {names[role]!r} (error code {answer.errors.get(names[role], -1)})"
                for role in missing
            )
            raise TopicError(
                f"the broker reported no id for the {detail} in {attempt} attempts over "
                f"{wait_s:.0f} s; the global model's offsets refer to a known id, so it is "
                "not taken as recreated. Check that the topic exists and that this client may "
                "describe it"
            )
        if attempt == 1:
            logger.info(
                "topic ids not reported yet; asking again for up to %.0f s topics=%s",
                wait_s,
                ",".join(names[role] for role in missing),
            )
        sleep(_TOPIC_ID_RETRY_S)


def rebind_topics(snapshot: Snapshot, topic_ids: Mapping[str, object]) -> Snapshot:
    """The snapshot, with offsets kept only for topics that are still the same.

    Only a known id that differs from the recorded one means the topic was
    recreated (or the broker is a new one, such as a restarted embedded one that
    lost everything): that topic starts at offset 0 again, so the model keeps
    what it learned but learns the new topic from its beginning. An id the
    broker did not report (missing, None, the zero UUID of a metadata error)
    changes nothing: taking it as "recreated" would re-learn every event.
    A topic the snapshot records no id for adopts the broker's (first time).
    """
    offsets, contributions_offset = snapshot.offsets, snapshot.contributions_offset
    recorded = snapshot.topic_ids
    ids = dict(recorded)
    for role in TOPIC_ROLES:
        old = kafka_topics.known_topic_id(recorded.get(role))
        new = kafka_topics.known_topic_id(topic_ids.get(role))
        if new is None or new == old:
            continue
        ids[role] = new
        if old is None:
            continue
        if role == "features":
            logger.warning(
                "features topic was recreated; learning restarts at its beginning "
                "version=%d old_id=%s new_id=%s",
                snapshot.version,
                old,
                new,
            )
            offsets = {}
        else:
            logger.warning(
                "contributions topic was recreated; reading it from 0 version=%d "
                "old_id=%s new_id=%s",
                snapshot.version,
                old,
                new,
            )
            contributions_offset = 0
    if ids == recorded:
        return snapshot
    return replace(
        snapshot, offsets=offsets, contributions_offset=contributions_offset, topic_ids=ids
    )


def check_compatible(snapshot: Snapshot, model: ModelSettings) -> None:
    if snapshot.model_config and snapshot.model_config != model.as_dict():
        raise ConfigError(
            f"global model version {snapshot.version} was learned with {snapshot.model_config}, "
            f"not {model.as_dict()}; use the same model settings or another checkpoint dir/topic"
        )


# An epoch is ``(counter << EPOCH_TIE_BITS) | tie``. The counter orders the
# takeovers; the random tie keeps two mergers that took over at about the same
# moment (each before it could read the other's first version) from sharing an
# epoch, whose versions readers would then mix up. 20 bits: two such mergers
# collide once in a million; a counter of whole seconds (below 2**32 until 2106)
# keeps epochs below 2**52, exact in a float64 and in JSON.
EPOCH_TIE_BITS = 20


def next_epoch(
    seen: Iterable[int], now_s: float | None = None, rng: random.Random | None = None
) -> int:
    """The epoch for a merger taking over: above every epoch in ``seen``, and
    unique to this takeover.

    The counter is the highest seen plus one, and at least the current time in
    whole seconds: a merger that takes over after another, but read the model
    topic before that one published, still takes a greater epoch as long as
    the takeovers are more than a second (plus the machines' clock skew)
    apart. Epochs from before this scheme (small integers, counter 0) are all
    older than any new one. Ordering stays ``(epoch, version)`` for every reader.
    """
    highest = max(seen, default=0) >> EPOCH_TIE_BITS
    now = int(time.time() if now_s is None else now_s)
    counter = max(highest + 1, now)
    tie = (rng or random.SystemRandom()).getrandbits(EPOCH_TIE_BITS)
    return (counter << EPOCH_TIE_BITS) | tie


def model_key(snapshot: Snapshot) -> bytes:
    """The model topic record key: one per epoch.

    The topic is compacted, and compaction keeps the last record *written* per
    key, not the newest by (epoch, version). Under one shared key, a zombie's
    older-epoch version written after the active merger's would be the only one
    left. Keyed by epoch, each merger's newest version survives, and readers
    pick the greatest (epoch, version) among them. The price: one whole model
    per epoch stays on the topic (epochs change only on takeovers).
    """
    return b"epoch-%d" % snapshot.epoch
