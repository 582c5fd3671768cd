"""Event sources for the producer: a synthetic stream with a known true model,
a synthetic click-through stream of categorical fields, river's bundled
datasets, and CSV/JSONL files.

Every source yields ``(id, x, y)`` with ``x`` a dict of values (floats; from
files, whatever the file holds: strings are categorical) and ``y`` a bool
or None, in a fixed order (seeded where random), so a replay is reproducible.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stream.config import Dataset, choices_of
from stream.errors import ConfigError

Row = tuple[str | int, dict[str, float], bool | None]

DATASETS = choices_of(Dataset)


@dataclass(frozen=True)
class SyntheticStream:
    """Logistic data from a known model: ``P(y=1|x) = sigmoid(w.x + b)``, x ~ N(0, 1).

    ``drift_at``: from that event on, the true weights are replaced by new ones
    (an abrupt concept drift). ``weights(before_drift)`` gives the true model.
    """

    n_features: int = 10
    seed: int = 42
    drift_at: int | None = None
    id_prefix: str = ""

    def __post_init__(self) -> None:
        if self.n_features < 1:
            raise ConfigError(f"n_features must be >= 1, got {self.n_features}")
        if self.drift_at is not None and self.drift_at < 0:
            raise ConfigError(f"drift_at must be >= 0, got {self.drift_at}")

    def true_model(self, drifted: bool = False) -> tuple[np.ndarray, float]:
        rng = np.random.default_rng([self.seed, 1 if drifted else 0])
        return rng.normal(0.0, 1.5, self.n_features), float(rng.normal(0.0, 0.5))

    def __iter__(self) -> Iterator[Row]:
        rng = np.random.default_rng(self.seed)
        names = [f"f{i}" for i in range(self.n_features)]
        w, b = self.true_model()
        for i in itertools.count():
            if self.drift_at is not None and i == self.drift_at:
                w, b = self.true_model(drifted=True)
            x = rng.normal(0.0, 1.0, self.n_features)
            p = 1.0 / (1.0 + math.exp(-(float(x @ w) + b)))
            y = bool(rng.random() < p)
            yield f"{self.id_prefix}{i}", dict(zip(names, x.tolist(), strict=True)), y


# The click-through stream's fields: (name, distinct values, spread of their
# true effects on the log-odds). Cardinalities of the order of public CTR logs
# (Avazu, Criteo): a few small fields (hour, device type, banner position),
# publishers and geography in the thousands, ads and creatives in the hundreds
# of thousands, users in the millions: about 2.35 million values in all.
CTR_FIELDS: tuple[tuple[str, int, float], ...] = (
    ("hour", 24, 0.3),
    ("weekday", 7, 0.1),
    ("banner_pos", 8, 0.5),
    ("device_type", 5, 0.4),
    ("os", 20, 0.2),
    ("browser", 30, 0.2),
    ("country", 200, 0.3),
    ("region", 3_000, 0.3),
    ("city", 50_000, 0.3),
    ("site", 5_000, 0.6),
    ("site_category", 30, 0.4),
    ("app", 3_000, 0.5),
    ("domain", 8_000, 0.4),
    ("advertiser", 20_000, 0.5),
    ("campaign", 50_000, 0.5),
    ("ad", 200_000, 0.6),
    ("creative", 400_000, 0.4),
    ("device_model", 10_000, 0.3),
    ("user_segment", 500, 0.5),
    ("user", 1_500_000, 0.5),
)


@dataclass(frozen=True)
class CtrStream:
    """A synthetic click-through stream: ``n_events`` impressions of the
    :data:`CTR_FIELDS` categorical fields (string values, so the features are
    ``site=412``, ``ad=90417``, ... by the event contract), clicked with
    ``P(y=1|x) = sigmoid(bias + sum of the true effect of each field's value)``.

    Popularity is heavy-headed, as in real logs: a field's value is
    ``floor(cardinality * u ** skew)`` with ``u`` uniform, so a few values come
    often and most rarely (skew 1 would be uniform). Every value's true effect
    is drawn once, normal with its field's spread, so the stream is learnable
    and a model's log loss has a floor (:meth:`true_probabilities`).
    ``bias`` sets the base rate: about 3% clicks with the defaults. Seeded:
    the same settings give the same stream.
    """

    n_events: int = 100_000
    seed: int = 42
    skew: float = 3.0
    bias: float = -4.6
    id_prefix: str = "ctr-"
    chunk: int = 10_000

    def __post_init__(self) -> None:
        if self.n_events < 0:
            raise ConfigError(f"n_events must be >= 0, got {self.n_events}")
        if self.skew < 1.0:
            raise ConfigError(f"skew must be >= 1 (1: uniform popularity), got {self.skew}")

    def effects(self) -> list[np.ndarray]:
        """The true effect on the log-odds of every value of every field."""
        rng = np.random.default_rng([self.seed, 1])
        return [rng.normal(0.0, spread, size) for _, size, spread in CTR_FIELDS]

    def _chunks(self) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """(value indices [events, fields], true p, clicks) per chunk of events."""
        rng = np.random.default_rng([self.seed, 0])
        effects = self.effects()
        sizes = np.array([size for _, size, _ in CTR_FIELDS], dtype=np.float64)
        for start in range(0, self.n_events, self.chunk):
            n = min(self.chunk, self.n_events - start)
            u = rng.random((n, len(CTR_FIELDS)))
            values = np.minimum((sizes * u**self.skew).astype(np.int64), sizes.astype(np.int64) - 1)
            logit = self.bias + sum(effects[j][values[:, j]] for j in range(len(CTR_FIELDS)))
            p = 1.0 / (1.0 + np.exp(-logit))
            yield values, p, rng.random(n) < p

    def true_probabilities(self) -> np.ndarray:
        """Every event's true click probability, in stream order."""
        return np.concatenate([p for _, p, _ in self._chunks()]) if self.n_events else np.zeros(0)

    def __iter__(self) -> Iterator[Row]:
        names = [name for name, _, _ in CTR_FIELDS]
        i = 0
        for values, _, clicks in self._chunks():
            for row, clicked in zip(values.tolist(), clicks.tolist(), strict=True):
                x = {name: str(v) for name, v in zip(names, row, strict=True)}
                yield f"{self.id_prefix}{i}", x, clicked
                i += 1


def dataset_rows(name: str) -> Iterator[Row]:
    """The rows of a named dataset: ``ctr`` (:class:`CtrStream` with its
    defaults) or one bundled with river."""
    if name == "ctr":
        return iter(CtrStream())
    return river_dataset(name)


def river_dataset(name: str) -> Iterator[Row]:
    """A binary-classification dataset bundled with river (no download)."""
    from river import datasets

    if name == "phishing":
        dataset = datasets.Phishing()
    elif name == "bananas":
        dataset = datasets.Bananas()
    else:
        raise ConfigError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    for i, (x, y) in enumerate(dataset):
        yield i, {str(k): float(v) for k, v in x.items()}, bool(y)


def file_rows(
    path: Path,
    label_column: str | None = "y",
    id_column: str | None = None,
    features: tuple[str, ...] | None = None,
) -> Iterator[Row]:
    """Rows of a CSV (header line) or JSONL file.

    Features are ``features`` if given, else every column but the label and id.
    Values are passed as they are: a CSV cell that is not a number is a string,
    so a categorical feature (``name=value``, by the event contract); an empty
    cell is null, which the worker dead-letters with a clear reason, rather
    than being dropped here. A missing or empty label cell means "unlabeled".
    """
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        rows = _jsonl(path)
    elif path.suffix.lower() == ".csv":
        rows = _csv(path)
    else:
        raise ConfigError(f"{path}: expected a .csv or .jsonl file")
    for i, row in enumerate(rows):
        event_id = row.pop(id_column) if id_column and id_column in row else i
        if isinstance(event_id, float):  # a CSV id cell read as a number
            event_id = int(event_id) if event_id.is_integer() else str(event_id)
        raw_y = row.pop(label_column, None) if label_column else None
        names = features if features is not None else tuple(row)
        x = {name: row.get(name) for name in names}
        yield event_id, x, _parse_label(raw_y)


def _csv(path: Path) -> Iterator[dict]:
    with path.open(newline="") as fh:
        for row in csv.DictReader(fh):
            yield {k: _number(v) for k, v in row.items()}


def _jsonl(path: Path) -> Iterator[dict]:
    with path.open() as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)


def _number(cell: str) -> float | str | None:
    if cell == "":
        return None
    try:
        return float(cell)
    except ValueError:
        return cell


def _parse_label(raw: object) -> bool | None:
    if raw is None or raw == "":
        return None
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str):
        lowered = raw.strip().lower()
        if lowered in ("1", "true", "yes"):
            return True
        if lowered in ("0", "false", "no"):
            return False
    elif raw in (0, 1):
        return bool(raw)
    # Not a label we know: send it as it is; the worker dead-letters it as invalid_label.
    return raw  # type: ignore[return-value]
