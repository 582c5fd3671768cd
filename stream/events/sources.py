"""Event sources for the producer: a synthetic stream with a known true model,
river's bundled datasets, and CSV/JSONL files.

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


def river_dataset(name: str) -> Iterator[Row]:
    """A binary-classification dataset bundled with river (no download)."""
    from river import datasets

    if name == "phishing":
        dataset = datasets.Phishing()
    elif name == "bananas":
        dataset = datasets.Bananas()
    else:
        raise ConfigError(f"unknown dataset {name!r}; bundled: {', '.join(DATASETS)}")
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
