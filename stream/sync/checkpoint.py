"""Global model snapshots: the same record on the model topic and on disk.

A :class:`Snapshot` is immutable and says exactly what the global model
reflects: for every features partition, the next offset it has *not* learned
(``offsets``), and how far into the contributions topic the merger has read.

On disk: ``model-<version>.ckpt`` in the checkpoint directory, written to a
temporary file, fsynced, renamed, then the directory fsynced, so a crash leaves
either the old file set or the new one. The file is ``MAGIC``, a 4-byte schema
version, a 4-byte CRC32 and an 8-byte length (all big-endian), then a msgpack
map. A torn or corrupt file fails its length or CRC check and is skipped with
a warning; the newest good one wins. Never pickle: any language can read these.
"""

from __future__ import annotations

import logging
import os
import struct
import time
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path

import msgpack

from stream.config import ModelSettings
from stream.errors import CheckpointError, StreamError
from stream.faults import NO_CRASH, CrashPoints
from stream.model.merge import state_from_dict
from stream.model.state import ModelState, non_finite, pack_state
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
_STATE_MAPS = ("weights", "scaler_counts", "scaler_means", "scaler_vars", "ftrl_z", "ftrl_n")


@dataclass(frozen=True)
class Snapshot:
    """One global model version.

    ``offsets``: features partition -> next offset not learned. ``applied`` /
    ``rejected``: worker name -> highest contribution seq applied / rejected
    (workers read these to know what became of their contributions).
    ``model_config``: the model settings it was learned with, so a checkpoint
    is never loaded into a differently configured model. ``topic_ids``: the
    broker's ids of the features and contributions topics the offsets refer to,
    so offsets are not applied to a topic that was recreated (or to a new broker).
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
                "version": self.version,
                "epoch": self.epoch,
                "created_at": self.created_at or time.time(),
                "n_learned": self.state.n_learned,
                "state": pack_state(self.state),
                "offsets": {str(p): o for p, o in self.offsets.items()},
                "contributions_offset": self.contributions_offset,
                "applied": self.applied,
                "rejected": self.rejected,
                "model_config": self.model_config,
                "topic_ids": self.topic_ids,
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
        state = _legacy_state(fields) if schema == 1 else fields.state("state")
        n_learned = fields.integer("n_learned", default=state.n_learned)
        if n_learned != state.n_learned:
            fields.fail("n_learned", f"differs from the state's {state.n_learned}", n_learned)
        # Validated here so every reader refuses a foreign-looking version; the
        # pipeline identity itself is the checkpoint scope's business.
        fields.text_map("pipeline", default={})
        return cls(
            version=fields.integer("version"),
            epoch=fields.integer("epoch", default=0),
            state=state,
            offsets=fields.offset_map("offsets"),
            contributions_offset=fields.integer("contributions_offset", MAX_OFFSET),
            applied=fields.seq_map("applied"),
            rejected=fields.seq_map("rejected"),
            model_config=_model_config(fields),
            topic_ids=fields.text_map("topic_ids", default={}),
            created_at=fields.number("created_at"),
        )


def _legacy_state(fields: Fields) -> ModelState:
    """Schema 1: the state as plain maps."""
    try:
        state = state_from_dict(fields.mapping("state"))
    except (TypeError, ValueError) as exc:
        fields.fail("state", f"not a model state ({exc})")
    for name in _STATE_MAPS:
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
        **{name: {k: float(v) for k, v in getattr(state, name).items()} for name in _STATE_MAPS},
    )
    return fields.possible("state", plain)


def _model_config(fields: Fields) -> dict:
    """The settings the model was learned with: empty, or valid model settings."""
    config = fields.mapping("model_config")
    if config:
        try:
            ModelSettings(**config)
        except (TypeError, ValueError, StreamError) as exc:
            fields.fail("model_config", f"not valid model settings ({exc})", config)
    return dict(config)


class CheckpointStore:
    """A directory of snapshots; keeps the newest ``keep``."""

    def __init__(self, directory: Path, keep: int = 5, crash: CrashPoints = NO_CRASH) -> None:
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        self.directory = Path(directory)
        self.keep = keep
        self.crash = crash

    def path_for(self, version: int, epoch: int = 0) -> Path:
        """Names sort as snapshots order: by epoch, then version."""
        return self.directory / f"model-{epoch:06d}-{version:012d}.ckpt"

    def write(self, snapshot: Snapshot) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        payload = snapshot.to_bytes()
        header = _HEADER.pack(MAGIC, SCHEMA_VERSION, zlib.crc32(payload), len(payload))
        final = self.path_for(snapshot.version, snapshot.epoch)
        tmp = final.with_suffix(f".tmp-{os.getpid()}")
        with open(tmp, "wb") as fh:
            fh.write(header)
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        self.crash.hit("merger.during_checkpoint_write")
        os.replace(tmp, final)
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

    def _prune(self) -> None:
        for old in sorted(self.directory.glob(_PATTERN))[: -self.keep]:
            old.unlink(missing_ok=True)

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

    def latest(self) -> Snapshot | None:
        """The newest readable, finite snapshot by (epoch, version). Unreadable ones
        are skipped with a warning, non-finite ones (NaN or infinite numbers) with
        an error. Every file is read (there are ``keep`` of them): the order is
        the snapshots', not their names'."""
        if not self.directory.is_dir():
            return None
        found = []
        for path in sorted(self.directory.glob(_PATTERN)):
            try:
                snapshot = self.read(path)
            except (CheckpointError, OSError) as exc:
                logger.warning("checkpoint skipped path=%s error=%s", path, exc)
                continue
            bad = non_finite(snapshot.state)
            if bad is not None:
                logger.error("checkpoint refused: not finite path=%s value=%s", path, bad)
                continue
            found.append(snapshot)
        return max(found, key=lambda s: s.order, default=None)
