"""Global model snapshots: the same record on the model topic and on disk.

A :class:`Snapshot` is immutable and says exactly what the global model
reflects: for every features partition, the next offset it has *not* learned
(``offsets``), and how far into the contributions topic the merger has read.

On disk: ``model-<features>@<cluster>-<epoch>-<version>.ckpt`` in the
checkpoint directory (its pipeline's scope in the name and in the content, so
pipelines can share a directory), written to a temporary file
(``...tmp-<pid>``), fsynced, renamed, then the directory fsynced, so a crash
leaves either the old file set or the new one. The file is ``MAGIC``, a 4-byte schema
version, a 4-byte CRC32 and an 8-byte length (all big-endian), then a msgpack
map. A torn or corrupt file fails its length or CRC check and is skipped with
a warning; the newest good one wins. Never pickle: any language can read these.
"""

from __future__ import annotations

import logging
import os
import re
import struct
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

import msgpack

from stream.config import ModelSettings
from stream.errors import CheckpointError, StreamError
from stream.faults import NO_CRASH, CrashPoints
from stream.model.merge import state_from_dict
from stream.model.state import STATE_MAPS, ModelState, non_finite, pack_state
from stream.sync.records import MAX_OFFSET, Fields

logger = logging.getLogger(__name__)

MAGIC = b"LSCKPT"
# 2: the model state in its packed form (stream.model.state.pack_state) and an
# epoch. Schema 1 (state as plain maps) is still read.
SCHEMA_VERSION = 2
READABLE_SCHEMAS = (1, 2)
_HEADER = struct.Struct(">6sIIQ")
HEADER_SIZE = _HEADER.size
_PATTERN = "model-*.ckpt"


@dataclass(frozen=True)
class Snapshot:
    """One global model version.

    ``offsets``: features partition -> next offset not learned. ``applied`` /
    ``rejected``: worker life (``name~incarnation``, one per process life, see
    :mod:`stream.runtime.identity`) -> highest contribution seq applied /
    rejected, for the lives heard from most recently and every life this
    version decided (workers read these, and the offsets, to know what became
    of their contributions: :func:`stream.sync.pending.settle`). Versions
    written before lives name plain workers; they load, and judge no life.
    ``model_config``: the model settings it was learned with, so a checkpoint
    is never loaded into a differently configured model. ``topic_ids``: the
    broker's ids of the features and contributions topics the offsets refer to,
    so offsets are not applied to a topic that was recreated (or to a new broker).
    ``pipeline``: the features topic and cluster id it was learned from, so a
    checkpoint directory shared by several pipelines never gives one another's model.
    """

    version: int
    state: ModelState
    # Which merger made it: each merger that becomes active publishes under a
    # new epoch, greater than any it found. Versions are ordered by
    # (epoch, version), so a merger that lost its role but still runs (a
    # zombie) cannot publish anything that readers would take as newer.
    epoch: int = 0
    offsets: dict[int, int] = field(default_factory=dict)
    contributions_offset: int = 0
    applied: dict[str, int] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)
    model_config: dict = field(default_factory=dict)
    topic_ids: dict[str, str] = field(default_factory=dict)
    created_at: float = 0.0
    # Which pipeline it belongs to: {"features": topic, "cluster": cluster id}.
    # Empty in checkpoints written before scopes existed.
    pipeline: dict[str, str] = field(default_factory=dict)

    @property
    def n_learned(self) -> int:
        return self.state.n_learned

    @property
    def order(self) -> tuple[int, int]:
        """How versions compare: (epoch, version)."""
        return (self.epoch, self.version)

    def to_bytes(self) -> bytes:
        return msgpack.packb(
            {
                "schema": SCHEMA_VERSION,
                # The header first: readers peek it (stream.sync.chain.peek).
                "kind": "snapshot",
                "epoch": self.epoch,
                "version": self.version,
                "created_at": self.created_at or time.time(),
                "n_learned": self.state.n_learned,
                "state": pack_state(self.state),
                **version_fields(self),
            },
            use_bin_type=True,
        )

    @classmethod
    def from_bytes(cls, payload: bytes) -> Snapshot:
        """The model version in ``payload``, checked field by field; raises
        :class:`~stream.errors.CheckpointError` (naming the field and value) on
        anything malformed or impossible, and nothing else: every reader of the
        model topic and of checkpoint files (workers, the merger's takeover,
        ``serve``, ``status``, ``export``) skips such a version instead of
        loading it, or crashing on it for ever."""
        try:
            data = msgpack.unpackb(payload, raw=False)
        except (msgpack.UnpackException, ValueError, TypeError) as exc:
            raise CheckpointError(f"model version: not msgpack: {exc!r}") from exc
        fields = Fields(data, "model version", CheckpointError)
        schema = fields.raw("schema", None)
        if schema not in READABLE_SCHEMAS:
            fields.fail("schema", f"not one of {READABLE_SCHEMAS}", schema)
        # Records from before delta versions have no kind; a delta is not a snapshot.
        kind = fields.raw("kind", "snapshot")
        if kind != "snapshot":
            fields.fail("kind", "not a full snapshot", kind)
        state = _legacy_state(fields) if schema == 1 else fields.state("state")
        n_learned = fields.integer("n_learned", default=state.n_learned)
        if n_learned != state.n_learned:
            fields.fail("n_learned", f"differs from the state's {state.n_learned}", n_learned)
        return cls(
            version=fields.integer("version"),
            epoch=fields.integer("epoch", default=0),
            state=state,
            offsets=fields.offset_map("offsets"),
            contributions_offset=fields.integer("contributions_offset", MAX_OFFSET),
            applied=fields.seq_map("applied"),
            rejected=fields.seq_map("rejected"),
            model_config=model_config_field(fields),
            topic_ids=fields.text_map("topic_ids", default={}),
            created_at=fields.number("created_at"),
            pipeline=fields.text_map("pipeline", default={}),
        )


def version_fields(version: Snapshot | VersionRecord) -> dict:
    """What a snapshot and a delta version (:class:`stream.sync.chain.DeltaVersion`)
    both record after their state, as the wire writes it."""
    return {
        "offsets": {str(p): o for p, o in version.offsets.items()},
        "contributions_offset": version.contributions_offset,
        "applied": version.applied,
        "rejected": version.rejected,
        "model_config": version.model_config,
        "topic_ids": version.topic_ids,
        "pipeline": version.pipeline,
    }


class VersionRecord(Protocol):
    """What :func:`version_fields` reads: a snapshot's fields, a delta version's."""

    offsets: dict[int, int]
    contributions_offset: int
    applied: dict[str, int]
    rejected: dict[str, int]
    model_config: dict
    topic_ids: dict[str, str]
    pipeline: dict[str, str]


def _legacy_state(fields: Fields) -> ModelState:
    """Schema 1: the state as plain maps."""
    try:
        state = state_from_dict(fields.mapping("state"))
    except (TypeError, ValueError) as exc:
        fields.fail("state", f"not a model state ({exc})")
    for name in STATE_MAPS:
        values = getattr(state, name)
        if not isinstance(values, dict) or not all(
            isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool)
            for k, v in values.items()
        ):
            fields.fail(f"state.{name}", "not a map of names to numbers", values)
    intercept = state.intercept
    if isinstance(intercept, bool) or not isinstance(intercept, (int, float)):
        fields.fail("state.intercept", "not a number", intercept)
    fields.check_integer("state.n_learned", state.n_learned)
    plain = replace(
        state,
        intercept=float(intercept),
        **{name: {k: float(v) for k, v in getattr(state, name).items()} for name in STATE_MAPS},
    )
    return fields.possible("state", plain)


def model_config_field(fields: Fields) -> dict:
    """The settings the model was learned with: empty, or valid model settings."""
    config = fields.mapping("model_config")
    if config:
        try:
            ModelSettings(**config)
        except (TypeError, ValueError, StreamError) as exc:
            fields.fail("model_config", f"not valid model settings ({exc})", config)
    return dict(config)


def pipeline_tag(pipeline: Mapping[str, str]) -> str:
    """The file-name form of a pipeline scope: ``<features>@<cluster>``.

    Kafka topic names are ``[a-zA-Z0-9._-]``, so the features part ends at the
    first ``@``; the cluster id's other characters become ``_`` (the file's
    content holds the exact scope, the name only sorts files by pipeline).
    """
    cluster = re.sub(r"[^A-Za-z0-9._-]", "_", pipeline.get("cluster", ""))
    return f"{pipeline['features']}@{cluster}"


def scope_conflict(found: Mapping[str, str], wanted: Mapping[str, str]) -> str | None:
    """Why a snapshot of pipeline ``found`` is not one of ``wanted``, or None.
    Keys that only one side knows (a reader without a broker has no cluster id)
    are not compared."""
    for key in sorted(set(found) & set(wanted)):
        if found[key] != wanted[key]:
            return f"{key} is {found[key]!r}, not {wanted[key]!r}"
    return None


# A temporary file whose writer died is removed once it is this old: a write
# takes well under a second, and the age spares a live writer on another host
# sharing the directory (whose pid means nothing here).
STALE_TMP_S = 60.0

_NAME = re.compile(
    r"^model-(?:(?P<tag>[^/]*@[^/]*)-)?(?P<epoch>\d+)-(?P<version>\d+)"
    r"\.(?:ckpt|tmp-(?P<pid>\d+))$"
)


class CheckpointStore:
    """A directory of snapshots; keeps the newest ``keep`` of its pipeline.

    ``pipeline``: the scope this store reads and writes ({"features": topic,
    "cluster": id}). Its files are named ``model-<features>@<cluster>-...``, so
    several pipelines can share a directory: :meth:`latest` refuses another
    pipeline's snapshot and pruning only touches the store's own files. Without
    a scope (tools, offline readers) every snapshot is read and files are named
    as before scopes existed (``model-<epoch>-<version>.ckpt``).
    """

    def __init__(
        self,
        directory: Path,
        keep: int = 5,
        crash: CrashPoints = NO_CRASH,
        pipeline: Mapping[str, str] | None = None,
    ) -> None:
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        if pipeline and not pipeline.get("features"):
            raise ValueError(f"a pipeline scope needs its features topic, got {dict(pipeline)}")
        self.directory = Path(directory)
        self.keep = keep
        self.crash = crash
        self.pipeline: dict[str, str] = dict(pipeline or {})
        self._tag = pipeline_tag(self.pipeline) if self.pipeline else None

    def scoped(self, pipeline: Mapping[str, str]) -> CheckpointStore:
        """The same directory and settings, for ``pipeline``."""
        return CheckpointStore(self.directory, self.keep, self.crash, pipeline)

    def path_for(self, version: int, epoch: int = 0) -> Path:
        """Names sort as snapshots order within a pipeline: by epoch, then version."""
        prefix = f"model-{self._tag}-" if self._tag else "model-"
        return self.directory / f"{prefix}{epoch:06d}-{version:012d}.ckpt"

    def write(self, snapshot: Snapshot) -> Path:
        """Write ``snapshot`` (stamped with this store's pipeline) durably; raises
        OSError when the directory is not writable, leaving no temporary file."""
        if self.pipeline:
            conflict = scope_conflict(snapshot.pipeline, self.pipeline)
            if conflict is not None:
                raise CheckpointError(
                    f"snapshot version {snapshot.version} belongs to another pipeline "
                    f"({conflict}); not written to {self.directory}"
                )
            if snapshot.pipeline != self.pipeline:
                snapshot = replace(snapshot, pipeline=dict(self.pipeline))
        self.directory.mkdir(parents=True, exist_ok=True)
        payload = snapshot.to_bytes()
        header = _HEADER.pack(MAGIC, SCHEMA_VERSION, zlib.crc32(payload), len(payload))
        final = self.path_for(snapshot.version, snapshot.epoch)
        tmp = final.with_suffix(f".tmp-{os.getpid()}")
        try:
            with open(tmp, "wb") as fh:
                fh.write(header)
                fh.write(payload)
                fh.flush()
                os.fsync(fh.fileno())
            self.crash.hit("merger.during_checkpoint_write")
            os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        self._prune()
        logger.info(
            "checkpoint written version=%d n_learned=%d path=%s",
            snapshot.version,
            snapshot.n_learned,
            final,
        )
        return final

    def _own(self) -> tuple[list[tuple[int, int, Path]], list[tuple[int, Path]]]:
        """This store's files by name: (epoch, version, path) of its checkpoints
        and (pid, path) of its temporary files."""
        checkpoints, temporary = [], []
        for path in self.directory.glob("model-*"):
            match = _NAME.match(path.name)
            if match is None or match["tag"] != self._tag:
                continue
            if match["pid"] is None:
                checkpoints.append((int(match["epoch"]), int(match["version"]), path))
            else:
                temporary.append((int(match["pid"]), path))
        return sorted(checkpoints), temporary

    def _prune(self) -> None:
        """Only this pipeline's files: all but the newest ``keep`` checkpoints, and
        temporary files left by a writer that died."""
        checkpoints, temporary = self._own()
        for _, _, old in checkpoints[: -self.keep]:
            old.unlink(missing_ok=True)
        now = time.time()
        for pid, path in temporary:
            try:
                stale = not _alive(pid) and now - path.stat().st_mtime > STALE_TMP_S
            except FileNotFoundError:
                continue
            if stale:
                logger.info("stale temporary checkpoint removed path=%s pid=%d", path, pid)
                path.unlink(missing_ok=True)

    @staticmethod
    def read(path: Path) -> Snapshot:
        raw = Path(path).read_bytes()
        if len(raw) < _HEADER.size:
            raise CheckpointError(f"{path}: torn ({len(raw)} bytes, shorter than the header)")
        magic, schema, crc, length = _HEADER.unpack_from(raw)
        if magic != MAGIC:
            raise CheckpointError(f"{path}: not a learnstream checkpoint (magic {magic!r})")
        if schema not in READABLE_SCHEMAS:
            raise CheckpointError(f"{path}: unknown schema version {schema}")
        payload = raw[_HEADER.size :]
        if len(payload) != length:
            raise CheckpointError(f"{path}: torn ({len(payload)} of {length} payload bytes)")
        if zlib.crc32(payload) != crc:
            raise CheckpointError(f"{path}: corrupt (CRC mismatch)")
        return Snapshot.from_bytes(payload)

    def features_topics(self) -> list[str]:
        """The features topics whose pipelines wrote checkpoints here, by file name:
        what to name in an error when none of them is this store's pipeline."""
        if not self.directory.is_dir():
            return []
        tags = (_NAME.match(path.name) for path in self.directory.glob(_PATTERN))
        return sorted({m["tag"].partition("@")[0] for m in tags if m and m["tag"]})

    def latest(self, features_id: str | None = None) -> Snapshot | None:
        """The newest readable, finite snapshot of this store's pipeline by (epoch,
        version). Unreadable ones are skipped with a warning, non-finite ones (NaN
        or infinite numbers) with an error. Every candidate file is read (there
        are ``keep`` per pipeline): the order is the snapshots', not their names'.

        Another pipeline's snapshot is refused and logged with its path and
        scope. One written before scopes existed (no ``pipeline``) is adopted
        when its features topic id is ``features_id`` (the topic's current id,
        so it cannot be another pipeline's); without that id (no broker, or the
        topic not reported), only when the pipeline has no scoped checkpoint yet.
        """
        if not self.directory.is_dir():
            return None
        found, unscoped = [], []
        for path in sorted(self.directory.glob(_PATTERN)):
            match = _NAME.match(path.name)
            tag = match["tag"] if match else None
            if self.pipeline and tag is not None and not self._maybe_mine(tag):
                logger.info(
                    "checkpoint of another pipeline not loaded path=%s pipeline=%s want=%s",
                    path,
                    tag,
                    self._tag,
                )
                continue
            try:
                snapshot = self.read(path)
            except (CheckpointError, OSError) as exc:
                logger.warning("checkpoint skipped path=%s error=%s", path, exc)
                continue
            bad = non_finite(snapshot.state)
            if bad is not None:
                logger.error("checkpoint refused: not finite path=%s value=%s", path, bad)
                continue
            if not self.pipeline:
                found.append(snapshot)
            elif not snapshot.pipeline:
                unscoped.append((path, snapshot))
            elif (conflict := scope_conflict(snapshot.pipeline, self.pipeline)) is not None:
                logger.warning(
                    "checkpoint of another pipeline refused path=%s pipeline=%s want=%s (%s)",
                    path,
                    snapshot.pipeline,
                    self.pipeline,
                    conflict,
                )
            else:
                found.append(snapshot)
        found.extend(self._adoptable(unscoped, features_id, scoped=bool(found)))
        return max(found, key=lambda s: s.order, default=None)

    def _adoptable(
        self, unscoped: list[tuple[Path, Snapshot]], features_id: str | None, scoped: bool
    ) -> list[Snapshot]:
        """Which snapshots written before scopes existed can be this pipeline's."""
        adopted = []
        for path, snapshot in unscoped:
            recorded = snapshot.topic_ids.get("features")
            if features_id is not None:
                ok = recorded == features_id
                why = f"its features topic id {recorded} is not the current {features_id}"
            else:
                ok = not scoped
                why = "the pipeline has scoped checkpoints, and the features topic id is unknown"
            if ok:
                logger.info("checkpoint without a pipeline scope adopted path=%s", path)
                adopted.append(snapshot)
            else:
                logger.warning(
                    "checkpoint without a pipeline scope refused path=%s want=%s: %s",
                    path,
                    self.pipeline,
                    why,
                )
        return adopted

    def _maybe_mine(self, tag: str) -> bool:
        """Whether a file named with ``tag`` can be this pipeline's. As in
        :func:`scope_conflict`, a cluster id that only one side knows (a reader
        or a writer without a broker) is not compared: the features topic is."""
        features, _, cluster = tag.partition("@")
        if features != self.pipeline["features"]:
            return False
        return not cluster or "cluster" not in self.pipeline or tag == self._tag


def _alive(pid: int) -> bool:
    """Whether a process ``pid`` runs on this host."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True
