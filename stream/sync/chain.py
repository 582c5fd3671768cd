"""Versions that cost what changed: delta versions between full snapshots.

The merger publishes each version on the model topic as a :class:`DeltaVersion`:
the model keys its contributions wrote, with their NEW absolute values (packed
like :func:`~stream.model.state.pack_state`), the intercept and count, the
offsets, and the worker lives it decided. A reader holding the version it
``follows`` gets the new one by overwriting those keys, in time proportional to
them. Keys are never removed by a merge, so overwriting is the whole step.

A full :class:`~stream.sync.checkpoint.Snapshot` is published too: at takeover
(the new epoch's first version, a snapshot only), and right after the delta of
a version when :class:`Cadence` says so (every ``snapshot_every_versions``
versions, or sooner when the deltas since the last snapshot add up to more
bytes than it). A reader following the topic applies the delta and skips the
snapshot of the same version by its header (:func:`peek`), never unpacking
it; a reader starting cold starts at the newest snapshot of the newest epoch
and applies the deltas after it. So a cold start reads one snapshot and at
most ``snapshot_every_versions`` deltas, whose bytes add up to at most about
the snapshot's.

Compaction. Snapshots are keyed ``epoch-<e>`` (:func:`~stream.sync.fence.model_key`),
deltas ``epoch-<e>-d<version mod K>`` (:func:`delta_key`, K the cadence).
Compaction keeps, per key, the record written last. Take the newest snapshot
of epoch ``e``, at version ``s``: the deltas written after it have versions
``s+1 .. s+m`` with ``m <= K`` (the version ``s+K`` gets a snapshot after its
delta; only a crash between the two leaves ``m = K``, and then the epoch ends,
since a new merger takes a new epoch). Those ``m <= K`` consecutive versions
have ``m`` different residues mod K, and any later delta of epoch ``e`` with one
of those residues has a version above ``s+K``, so it was written after a newer
snapshot, contradicting that ``s`` is the newest. So every delta after the
newest snapshot is the last record of its key and survives compaction, and
the snapshot does too (the last of ``epoch-<e>``). Older deltas of an epoch
that compaction keeps lie before its newest snapshot, where readers never
start. The price: besides one snapshot, up to K deltas per epoch stay on the
topic (epochs change only at takeovers).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

import msgpack

from stream.errors import CheckpointError
from stream.model.state import STATE_MAPS, ModelState, pack_state
from stream.sync.checkpoint import SCHEMA_VERSION, Snapshot, model_config_field, version_fields
from stream.sync.fence import MAX_TRACKED_WORKERS, Changes
from stream.sync.records import MAX_OFFSET, Fields

KIND_SNAPSHOT = "snapshot"
KIND_DELTA = "delta"


@dataclass(frozen=True)
class DeltaVersion:
    """One version as what changed since the version it ``follows`` (same epoch).

    ``changed``: the keys the version's contributions wrote, each map holding
    the new value of those of its keys it has, plus the new intercept and
    ``n_learned``. ``applied``/``rejected``: the lives this version decided,
    with their newest seq, in the order last decided; a reader folds them into
    its maps as the merger did (moved to the end, then the bound), so its maps
    are the merger's. The rest is the version's own (small) metadata.
    """

    epoch: int
    version: int
    follows: int
    changed: ModelState
    offsets: dict[int, int] = field(default_factory=dict)
    contributions_offset: int = 0
    applied: dict[str, int] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)
    model_config: dict = field(default_factory=dict)
    topic_ids: dict[str, str] = field(default_factory=dict)
    created_at: float = 0.0
    pipeline: dict[str, str] = field(default_factory=dict)

    @property
    def order(self) -> tuple[int, int]:
        return (self.epoch, self.version)

    @property
    def keys(self) -> frozenset[str]:
        """Every key the version wrote."""
        return frozenset().union(*(getattr(self.changed, m) for m in STATE_MAPS))

    def to_bytes(self) -> bytes:
        # The header fields first: a reader peeks them without unpacking the rest.
        return msgpack.packb(
            {
                "schema": SCHEMA_VERSION,
                "kind": KIND_DELTA,
                "epoch": self.epoch,
                "version": self.version,
                "follows": self.follows,
                "created_at": self.created_at or time.time(),
                "n_learned": self.changed.n_learned,
                "changed": pack_state(self.changed),
                **version_fields(self),
            },
            use_bin_type=True,
        )

    @classmethod
    def from_bytes(cls, payload: bytes) -> DeltaVersion:
        """The delta version in ``payload``, checked field by field like a
        snapshot (:meth:`Snapshot.from_bytes`); raises
        :class:`~stream.errors.CheckpointError` naming the field and value, and
        nothing else."""
        try:
            data = msgpack.unpackb(payload, raw=False)
        except (msgpack.UnpackException, ValueError, TypeError) as exc:
            raise CheckpointError(f"model delta: not msgpack: {exc!r}") from exc
        fields = Fields(data, "model delta", CheckpointError)
        if fields.raw("schema", None) != SCHEMA_VERSION:
            fields.fail("schema", f"not {SCHEMA_VERSION}", fields.raw("schema", None))
        if fields.raw("kind", None) != KIND_DELTA:
            fields.fail("kind", f"not {KIND_DELTA!r}", fields.raw("kind", None))
        changed = fields.state("changed")
        n_learned = fields.integer("n_learned")
        if n_learned != changed.n_learned:
            fields.fail("n_learned", f"differs from the state's {changed.n_learned}", n_learned)
        version = fields.integer("version")
        follows = fields.integer("follows")
        if follows >= version:
            fields.fail("follows", f"not below the version {version}", follows)
        applied = fields.seq_map("applied")
        rejected = fields.seq_map("rejected")
        for name, seqs in (("applied", applied), ("rejected", rejected)):
            if len(seqs) > MAX_DECIDED:
                fields.fail(name, f"more than {MAX_DECIDED} lives decided", len(seqs))
        return cls(
            epoch=fields.integer("epoch"),
            version=version,
            follows=follows,
            changed=changed,
            offsets=fields.offset_map("offsets"),
            contributions_offset=fields.integer("contributions_offset", MAX_OFFSET),
            applied=applied,
            rejected=rejected,
            model_config=model_config_field(fields),
            topic_ids=fields.text_map("topic_ids", default={}),
            created_at=fields.number("created_at"),
            pipeline=fields.text_map("pipeline", default={}),
        )


# A version decides at most as many lives as it applies or rejects
# contributions, and one merge reads at most a few polls of 5,000 records; a
# hostile delta claiming more would make every reader's maps grow without bound.
MAX_DECIDED = 1_000_000


def delta_of(snapshot: Snapshot, follows: int, changes: Changes) -> DeltaVersion:
    """``snapshot`` (the version just computed) as a delta over ``follows``:
    the new values of the keys in ``changes``, in time proportional to them."""
    state = snapshot.state
    keys = changes.keys
    parts = {}
    for m in STATE_MAPS:
        values: dict[str, float] = getattr(state, m)
        parts[m] = {k: values[k] for k in keys if k in values}
    changed = ModelState(intercept=state.intercept, n_learned=state.n_learned, **parts)
    return DeltaVersion(
        epoch=snapshot.epoch,
        version=snapshot.version,
        follows=follows,
        changed=changed,
        offsets=snapshot.offsets,
        contributions_offset=snapshot.contributions_offset,
        applied=changes.applied,
        rejected=changes.rejected,
        model_config=snapshot.model_config,
        topic_ids=snapshot.topic_ids,
        created_at=snapshot.created_at,
        pipeline=snapshot.pipeline,
    )


def apply_delta(held: Snapshot, delta: DeltaVersion) -> Snapshot:
    """The version ``delta`` describes, made from ``held`` (the version it
    follows) IN PLACE: ``held``'s state maps are overwritten at the changed
    keys and shared by the result, in time proportional to them. ``held``
    must not be used afterwards; a holder that keeps a version across
    updates keeps a copy. Raises ValueError if ``held`` is not the version
    ``delta`` follows."""
    if held.order != (delta.epoch, delta.follows):
        raise ValueError(
            f"delta version {delta.order} follows {(delta.epoch, delta.follows)}, "
            f"not the version held {held.order}"
        )
    state = held.state
    for m in STATE_MAPS:
        changed: dict[str, float] = getattr(delta.changed, m)
        if changed:
            getattr(state, m).update(changed)
    new_state = ModelState(
        weights=state.weights,
        intercept=delta.changed.intercept,
        scaler_counts=state.scaler_counts,
        scaler_means=state.scaler_means,
        scaler_vars=state.scaler_vars,
        ftrl_z=state.ftrl_z,
        ftrl_n=state.ftrl_n,
        n_learned=delta.changed.n_learned,
    )
    return Snapshot(
        version=delta.version,
        state=new_state,
        epoch=delta.epoch,
        offsets=dict(delta.offsets),
        contributions_offset=delta.contributions_offset,
        applied=_decided(held.applied, delta.applied),
        rejected=_decided(held.rejected, delta.rejected),
        model_config=delta.model_config,
        topic_ids=delta.topic_ids,
        created_at=delta.created_at,
        pipeline=delta.pipeline,
    )


def _decided(seqs: Mapping[str, int], decided: Mapping[str, int]) -> dict[str, int]:
    """``seqs`` with the lives a version decided moved to the end (in the order
    decided, with their new seqs) and then bounded, as the merger's
    ``fence._touch`` and ``fence._newest`` left them: the same map."""
    out = dict(seqs)
    for life, seq in decided.items():
        out.pop(life, None)
        out[life] = seq
    keep = max(MAX_TRACKED_WORKERS, len(decided))
    if len(out) <= keep:
        return out
    return dict(list(out.items())[-keep:])


class Header(NamedTuple):
    """A model record's kind and place, read without unpacking the rest."""

    kind: str
    epoch: int
    version: int
    follows: int | None

    @property
    def order(self) -> tuple[int, int]:
        return (self.epoch, self.version)


_HEADER_KEYS = frozenset({"kind", "epoch", "version", "follows"})


def peek(payload: bytes | None) -> Header | None:
    """The header of a model record, or None if it has none readable. Cheap:
    the model state is skipped, not built (a snapshot's is most of its bytes).
    Records written before delta versions have no ``kind``: snapshots. The
    record is still validated in full before it is used."""
    if not payload:
        return None
    found: dict[str, object] = {}
    try:
        unpacker = msgpack.Unpacker(raw=False, max_buffer_size=max(len(payload), 1024))
        unpacker.feed(payload)
        for _ in range(unpacker.read_map_header()):
            key = unpacker.unpack()
            if key in _HEADER_KEYS:
                found[key] = unpacker.unpack()
                if found.get("kind") == KIND_SNAPSHOT and len(found) == 3:
                    break
                if len(found) == len(_HEADER_KEYS):
                    break
            else:
                unpacker.skip()
    except (msgpack.UnpackException, ValueError, TypeError):
        return None
    kind = found.get("kind", KIND_SNAPSHOT)
    epoch, version, follows = found.get("epoch", 0), found.get("version"), found.get("follows")
    if kind not in (KIND_SNAPSHOT, KIND_DELTA) or not _count(epoch) or not _count(version):
        return None
    if kind == KIND_DELTA and not _count(follows):
        return None
    return Header(kind, epoch, version, follows if kind == KIND_DELTA else None)  # type: ignore[arg-type]


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def delta_key(epoch: int, version: int, every_versions: int) -> bytes:
    """The model topic key of a delta version: see the module docstring for why
    every delta after the newest snapshot survives compaction under it."""
    return b"epoch-%d-d%d" % (epoch, version % every_versions)


class Cadence:
    """When the merger publishes a full snapshot besides a version's delta:
    ``every_versions`` versions after the last snapshot, or when the deltas
    since it add up to more bytes than it (a reader starting cold then reads
    at most about twice a snapshot's bytes)."""

    def __init__(self, every_versions: int) -> None:
        if every_versions < 1:
            raise ValueError(f"snapshot_every_versions must be >= 1, got {every_versions}")
        self.every_versions = every_versions
        self.versions = 0
        self.delta_bytes = 0
        self.snapshot_bytes = 0

    def snapshot_published(self, size: int) -> None:
        self.versions, self.delta_bytes, self.snapshot_bytes = 0, 0, size

    def delta_published(self, size: int) -> None:
        self.versions += 1
        self.delta_bytes += size

    def snapshot_due(self) -> bool:
        return self.versions >= self.every_versions or self.delta_bytes > self.snapshot_bytes
