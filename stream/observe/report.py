"""``learnstream report``: plots over time, read back from the predictions topic.

Three figures, each also a PNG beside the HTML page:

- quality: rolling accuracy and log loss (all workers, and each worker), with
  the points where a drift detector run over the loss stream fired;
- throughput: predictions per second;
- latency: event-to-prediction p50/p95/p99 per time bin.
"""

from __future__ import annotations

import base64
import html
import math
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stream.config import KafkaSettings, TopicSettings
from stream.errors import StreamError, optional
from stream.events.codec import decode_map
from stream.kafka.reader import records
from stream.observe.monitor import Monitor


def _pyplot():
    """matplotlib's pyplot, drawing to files only (no screen); matplotlib comes
    with the [report] extra, needed by this command only."""
    optional("matplotlib", "report", "learnstream report").use("Agg")
    import matplotlib.pyplot as plt

    return plt


@dataclass(frozen=True)
class Report:
    html_path: Path
    pngs: list[Path]
    predictions: int
    drifts: list[float]


def read_predictions(
    kafka: KafkaSettings, topic: str, limit: int | None, idle_s: float
) -> list[dict]:
    """Every prediction on the topic (first per event id), oldest scoring first."""
    first: dict = {}
    for n, record in enumerate(records(kafka, topic, idle_timeout_s=idle_s), 1):
        try:
            prediction, _ = decode_map(record.value)
        except StreamError:
            continue
        first.setdefault(prediction.get("id"), prediction)
        if limit is not None and n >= limit:
            break
    return sorted(first.values(), key=lambda p: p["ts_scored"])


def _rolling(labeled: list[tuple[float, bool, float]], window: int):
    """Rolling accuracy and log loss after each labeled prediction."""
    hits: deque[float] = deque(maxlen=window)
    losses: deque[float] = deque(maxlen=window)
    ts, acc, loss = [], [], []
    for t, y, p in labeled:
        hits.append(1.0 if (p >= 0.5) == y else 0.0)
        q = min(max(p if y else 1.0 - p, 1e-15), 1.0)
        losses.append(-math.log(q))
        ts.append(t)
        acc.append(sum(hits) / len(hits))
        loss.append(sum(losses) / len(losses))
    return np.array(ts), np.array(acc), np.array(loss)


def _png(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path


def build(predictions: list[dict], out: Path, window: int = 500, bins: int = 60) -> Report:
    if not predictions:
        raise StreamError("no predictions to report on")
    out.parent.mkdir(parents=True, exist_ok=True)
    stem = out.with_suffix("")
    t0 = predictions[0]["ts_scored"]
    labeled = [(p["ts_scored"] - t0, bool(p["y"]), float(p["p"])) for p in predictions if "y" in p]

    # Drift, as a worker's detector would see it, over the whole stream's losses.
    monitor = Monitor("report")
    drifts = []
    for t, y, p in labeled:
        if monitor.observe([(y, p)]):
            drifts.append(t)

    fig, (ax_acc, ax_loss) = _pyplot().subplots(2, 1, figsize=(10, 6.5), sharex=True)
    if labeled:
        ts, acc, loss = _rolling(labeled, window)
        ax_acc.plot(ts, acc, label="all workers", color="black", linewidth=1.6)
        ax_loss.plot(ts, loss, label="all workers", color="black", linewidth=1.6)
        for worker in sorted({p["worker"] for p in predictions}):
            mine = [
                (p["ts_scored"] - t0, bool(p["y"]), float(p["p"]))
                for p in predictions
                if "y" in p and p["worker"] == worker
            ]
            if mine:
                wts, wacc, wloss = _rolling(mine, window)
                ax_acc.plot(wts, wacc, label=worker, linewidth=0.8, alpha=0.7)
                ax_loss.plot(wts, wloss, label=worker, linewidth=0.8, alpha=0.7)
    for t in drifts:
        for ax in (ax_acc, ax_loss):
            ax.axvline(t, color="red", linestyle="--", linewidth=1)
    ax_acc.set_ylabel(f"accuracy (last {window})")
    ax_loss.set_ylabel(f"log loss (last {window})")
    ax_loss.set_xlabel("seconds since the first prediction")
    ax_acc.set_title("Learning curve" + (" (red: drift detected)" if drifts else ""))
    ax_acc.legend(fontsize=7, loc="lower right")
    quality_png = _png(fig, Path(f"{stem}-quality.png"))

    scored = np.array([p["ts_scored"] - t0 for p in predictions])
    latency_ms = np.array([(p["ts_scored"] - p["ts_record"]) * 1000 for p in predictions])
    edges = np.linspace(0, max(scored.max(), 1e-3), bins + 1)
    which = np.clip(np.digitize(scored, edges) - 1, 0, bins - 1)
    width = edges[1] - edges[0]
    centers = (edges[:-1] + edges[1:]) / 2

    fig, ax = _pyplot().subplots(figsize=(10, 3.5))
    ax.bar(centers, np.bincount(which, minlength=bins) / width, width=width * 0.9, color="tab:blue")
    ax.set_ylabel("predictions / s")
    ax.set_xlabel("seconds since the first prediction")
    ax.set_title("Throughput")
    throughput_png = _png(fig, Path(f"{stem}-throughput.png"))

    fig, ax = _pyplot().subplots(figsize=(10, 3.5))
    for q, style in ((50, "-"), (95, "--"), (99, ":")):
        values = [
            np.percentile(latency_ms[which == b], q) if np.any(which == b) else np.nan
            for b in range(bins)
        ]
        ax.plot(centers, values, style, label=f"p{q}")
    ax.set_ylabel("event to prediction (ms)")
    ax.set_xlabel("seconds since the first prediction")
    ax.set_title("Latency")
    ax.legend()
    latency_png = _png(fig, Path(f"{stem}-latency.png"))

    pngs = [quality_png, throughput_png, latency_png]
    images = "\n".join(
        f"<h2>{html.escape(png.stem.rsplit('-', 1)[-1].title())}</h2>\n"
        f'<img alt="{html.escape(png.name)}" src="data:image/png;base64,'
        f'{base64.b64encode(png.read_bytes()).decode()}">'
        for png in pngs
    )
    n_labeled = len(labeled)
    out.write_text(
        "<!doctype html>\n<html><head><meta charset='utf-8'><title>learnstream report</title>"
        "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}img{width:100%}</style>"
        "</head><body>\n<h1>learnstream report</h1>\n"
        f"<p>{len(predictions)} predictions ({n_labeled} labeled) over "
        f"{scored.max():.1f} s from {len({p['worker'] for p in predictions})} workers; "
        f"drift detected at {', '.join(f'{t:.1f} s' for t in drifts) or 'no point'}.</p>\n"
        f"{images}\n</body></html>\n"
    )
    return Report(out, pngs, len(predictions), drifts)


def report(
    kafka: KafkaSettings,
    topics: TopicSettings,
    out: Path,
    limit: int | None = None,
    window: int = 500,
    idle_s: float = 3.0,
) -> Report:
    _pyplot()  # a missing [report] extra is said before the topic is read
    return build(read_predictions(kafka, topics.predictions, limit, idle_s), out, window)
