"""``learnstream model show|export`` and ``learnstream score``: the global model offline."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from stream import cliargs
from stream.config import ModelExportSettings, ModelShowSettings, ScoreSettings
from stream.errors import BadEvent
from stream.events.codec import features, prediction_record
from stream.events.hashing import describe
from stream.events.sources import file_rows
from stream.model.export import export_bytes
from stream.observe.quality import prequential
from stream.serve.holder import serving
from stream.sync.globalmodel import export, load_latest


def _add_source(parser: argparse.ArgumentParser, settings: type) -> None:
    """The command's own declared settings (``--offline`` among them), then where
    the model comes from: the broker's model topic and the checkpoint directory."""
    cliargs.add_settings(parser, settings)
    cliargs.add_kafka(parser)
    cliargs.add_topics(parser, group_id=False)
    cliargs.add_checkpoint_dir(parser)
    cliargs.add_logging(parser)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("model", help="inspect or export the global model")
    sub = parser.add_subparsers(dest="model_command", required=True, metavar="ACTION")
    show = sub.add_parser("show", help="version, counts, top weights")
    _add_source(show, ModelShowSettings)
    show.set_defaults(func=run_show)
    exp = sub.add_parser(
        "export",
        help="the global model as JSON, compact msgpack or ONNX, optionally quantized",
        description="Write the global model. json without --quantize is the whole state "
        "(with offsets and FTRL state); with --quantize, and for msgpack and onnx, it is the "
        "compact scoring form (features, weights, intercept, scaler statistics). The size, "
        "and with --holdout the change in accuracy and log loss, go to stderr.",
    )
    _add_source(exp, ModelExportSettings)
    exp.set_defaults(func=run_export)

    score = subparsers.add_parser(
        "score",
        help="score a CSV/JSONL file offline with the global model",
        description="Score every row of a file with the latest global model (no learning); "
        "one JSON line per row on stdout (a row that breaks the event contract gets its "
        "dead-letter reason instead of p), and accuracy on stderr when rows have labels.",
    )
    score.add_argument("file", type=Path, help="a .csv (with header) or .jsonl file of events")
    _add_source(score, ScoreSettings)
    score.set_defaults(func=run_score)


def _snapshot(args: argparse.Namespace, offline: bool):
    kafka = None if offline else cliargs.kafka_settings(args)
    return load_latest(kafka, cliargs.topic_settings(args), cliargs.checkpoint_dir(args))


def run_show(args: argparse.Namespace) -> int:
    settings = cliargs.build(ModelShowSettings, args)
    snapshot = _snapshot(args, settings.offline)
    state = snapshot.state
    age = time.time() - snapshot.created_at if snapshot.created_at else float("nan")
    top = sorted(state.weights.items(), key=lambda kv: abs(kv[1]), reverse=True)[: settings.top]
    config = ", ".join(f"{k}={v}" for k, v in snapshot.model_config.items())
    lines = [
        f"version          {snapshot.version}",
        f"age              {age:.1f} s",
        f"learned events   {snapshot.n_learned}",
        f"model            {config or '-'}",
        f"features         {len(state.weights)}",
        f"intercept        {state.intercept:+.6f}",
        "learned up to    "
        + (", ".join(f"p{p}@{o}" for p, o in sorted(snapshot.offsets.items())) or "-"),
        f"worker lives     {len(snapshot.applied)} merged "
        f"(contributions rejected from {len(snapshot.rejected)})",
        f"top {len(top)} weights by magnitude:",
        *(f"  {name:<32} {weight:+.6f}" for name, weight in top),
    ]
    print("\n".join(lines))
    return 0


def run_export(args: argparse.Namespace) -> int:
    s = cliargs.build(ModelExportSettings, args)
    snapshot = _snapshot(args, s.offline)
    if s.format == "json" and s.quantize == "none":
        doc = {**export(snapshot), **_hashing(snapshot)}
        payload = (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()
    else:
        payload = _portable(snapshot, s.format, s.quantize)
    if s.out:
        s.out.write_bytes(payload)
    else:
        sys.stdout.buffer.write(payload)
        sys.stdout.flush()
    full = _portable(snapshot, s.format, "none")
    lines = [
        f"exported version {snapshot.version} as {s.format} quantize={s.quantize}: "
        f"{len(payload):,} bytes (compact full precision: {len(full):,} bytes)"
    ]
    if s.holdout is not None:
        lines.extend(_holdout_report(snapshot, s.quantize, s.holdout, s.label_column))
    print("\n".join(lines), file=sys.stderr)
    return 0


def _hashing(snapshot) -> dict:
    """``{"hashing": ...}`` for a model learned with --hash-bits (how a feature
    becomes a slot, so another language computes the same p), else nothing."""
    bits = snapshot.model_config.get("hash_bits")
    return {} if bits is None else {"hashing": describe(bits)}


def _portable(snapshot, fmt: str, quantize: str) -> bytes:
    meta = {
        "version": snapshot.version,
        "n_learned": snapshot.n_learned,
        "model_config": snapshot.model_config,
        **_hashing(snapshot),
    }
    scale = bool(snapshot.model_config.get("scale", True))
    return export_bytes(snapshot.state, scale, meta, fmt, quantize)


def _holdout_report(snapshot, quantize: str, path: Path, label_column: str) -> list[str]:
    """Accuracy and log loss of the full model and of the quantized one on ``path``."""
    if not path.exists():
        raise SystemExit(f"learnstream model export: error: {path} does not exist")
    # serve's one scoring function, of the full and of the quantized version.
    full, rounded = serving(snapshot), serving(snapshot, quantize)
    pairs_full, pairs_rounded = [], []
    for event_id, raw, y in file_rows(path, label_column or None, None):
        try:
            x = features(raw, event_id)
        except BadEvent:
            continue  # not an event a worker would score; not part of the holdout
        if isinstance(y, bool):
            pairs_full.append((y, full.predict_proba(x)))
            pairs_rounded.append((y, rounded.predict_proba(x)))
    if not pairs_full:
        return [f"holdout {path}: no labeled rows"]
    a, b = prequential(pairs_full), prequential(pairs_rounded)
    return [
        f"holdout {path} ({a.n} labeled rows), full -> {quantize}: "
        f"accuracy {a.accuracy:.4f} -> {b.accuracy:.4f} ({b.accuracy - a.accuracy:+.4f}), "
        f"log loss {a.log_loss:.4f} -> {b.log_loss:.4f} ({b.log_loss - a.log_loss:+.4f})"
    ]


def run_score(args: argparse.Namespace) -> int:
    s = cliargs.build(ScoreSettings, args)
    if not args.file.exists():
        raise SystemExit(f"learnstream score: error: {args.file} does not exist")
    snapshot = _snapshot(args, s.offline)
    # serve's one scoring function (slots when the model was learned with
    # --hash-bits: its settings say so), so the same row gets the same p.
    served = serving(snapshot)
    labeled = []
    for event_id, raw, y in file_rows(args.file, s.label_column or None, s.id_column):
        try:
            # The contract's own step from x to features (strings one-hot).
            x = features(raw, event_id)
        except BadEvent as exc:
            print(json.dumps({"id": event_id, "error": "invalid_event", "reason": exc.reason,
                              "message": exc.message}))  # fmt: skip
            continue
        p = served.predict_proba(x)
        label = y if isinstance(y, bool) else None
        if label is not None:
            labeled.append((label, p))
        print(json.dumps(prediction_record(event_id, p, snapshot.version, label)))
    if labeled:
        q = prequential(labeled)
        print(
            f"scored with version {snapshot.version}: accuracy {q.accuracy:.4f} "
            f"log loss {q.log_loss:.4f} over {q.n} labeled rows",
            file=sys.stderr,
        )
    return 0
