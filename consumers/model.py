"""``learnstream model show|export`` and ``learnstream score``: the global model offline."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from stream import cliargs
from stream.events.sources import file_rows
from stream.observe.quality import prequential
from stream.sync.globalmodel import export, load_latest, model_of


def _add_source(parser: argparse.ArgumentParser) -> None:
    cliargs.add_kafka(parser)
    cliargs.add_topics(parser, group_id=False)
    cliargs.add_checkpoint_dir(parser)
    parser.add_argument(
        "--offline",
        action="store_true",
        help="read the checkpoint directory only, do not contact the broker",
    )
    cliargs.add_logging(parser)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("model", help="inspect or export the global model")
    sub = parser.add_subparsers(dest="model_command", required=True, metavar="ACTION")
    show = sub.add_parser("show", help="version, counts, top weights")
    show.add_argument("--top", type=int, default=10, help="weights to list (default %(default)s)")
    _add_source(show)
    show.set_defaults(func=run_show)
    exp = sub.add_parser("export", help="the whole global model as JSON")
    exp.add_argument("--format", choices=["json"], default="json", help="(default: %(default)s)")
    exp.add_argument("--out", type=Path, default=None, help="file to write (default: stdout)")
    _add_source(exp)
    exp.set_defaults(func=run_export)

    score = subparsers.add_parser(
        "score",
        help="score a CSV/JSONL file offline with the global model",
        description="Score every row of a file with the latest global model (no learning); "
        "one JSON line per row on stdout, and accuracy on stderr when rows have labels.",
    )
    score.add_argument("file", type=Path, help="a .csv (with header) or .jsonl file of events")
    score.add_argument(
        "--label-column",
        default="y",
        help="column of the label; rows with it are judged (default: %(default)s)",
    )
    score.add_argument(
        "--id-column", default=None, help="column of the event id (default: row number)"
    )
    _add_source(score)
    score.set_defaults(func=run_score)


def _snapshot(args: argparse.Namespace):
    kafka = None if args.offline else cliargs.kafka_settings(args)
    return load_latest(kafka, cliargs.topic_settings(args), cliargs.checkpoint_dir(args))


def run_show(args: argparse.Namespace) -> int:
    snapshot = _snapshot(args)
    state = snapshot.state
    age = time.time() - snapshot.created_at if snapshot.created_at else float("nan")
    top = sorted(state.weights.items(), key=lambda kv: abs(kv[1]), reverse=True)[: args.top]
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
        f"workers merged   {len(snapshot.applied)} "
        f"(contributions rejected from {len(snapshot.rejected)})",
        f"top {len(top)} weights by magnitude:",
        *(f"  {name:<32} {weight:+.6f}" for name, weight in top),
    ]
    print("\n".join(lines))
    return 0


def run_export(args: argparse.Namespace) -> int:
    text = json.dumps(export(_snapshot(args)), indent=2, sort_keys=True)
    if args.out:
        args.out.write_text(text + "\n")
    else:
        print(text)
    return 0


def run_score(args: argparse.Namespace) -> int:
    if not args.file.exists():
        raise SystemExit(f"learnstream score: error: {args.file} does not exist")
    snapshot = _snapshot(args)
    model = model_of(snapshot)
    labeled = []
    for event_id, x, y in file_rows(args.file, args.label_column or None, args.id_column):
        p = model.predict_proba(x)
        out = {"id": event_id, "p": p, "y_pred": int(p >= 0.5), "model_version": snapshot.version}
        if isinstance(y, bool):
            out["y"] = int(y)
            labeled.append((y, p))
        print(json.dumps(out))
    if labeled:
        q = prequential(labeled)
        print(
            f"scored with version {snapshot.version}: accuracy {q.accuracy:.4f} "
            f"log loss {q.log_loss:.4f} over {q.n} labeled rows",
            file=sys.stderr,
        )
    return 0
