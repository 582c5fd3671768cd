"""Models and apps for the serve tests (no broker)."""

from __future__ import annotations

import random
import time

from stream.config import EventLimits, ModelSettings, ServeSettings
from stream.model.online import OnlineModel
from stream.serve.app import Backend, create_app
from stream.serve.holder import ModelHolder
from stream.serve.quality import RollingQuality
from stream.sync.checkpoint import Snapshot

FEATURES = [f"f{i}" for i in range(5)]


def trained(seed: int = 0, n: int = 300, settings: ModelSettings | None = None) -> OnlineModel:
    settings = settings or ModelSettings()
    rng = random.Random(seed)
    model = OnlineModel(settings)
    for _ in range(n):
        x = {name: rng.gauss(i, 1 + i) for i, name in enumerate(FEATURES)}
        model.learn(x, x["f1"] + rng.gauss(0, 1) > 1)
    return model


def snapshot(version: int, seed: int = 0, settings: ModelSettings | None = None) -> Snapshot:
    settings = settings or ModelSettings()
    model = trained(seed, settings=settings)
    return Snapshot(
        version=version,
        state=model.state(),
        model_config=settings.as_dict(),
        created_at=time.time(),
    )


def event(i: int, rng: random.Random | None = None) -> dict:
    rng = rng or random.Random(i)
    return {"id": f"e-{i}", "x": {name: rng.gauss(j, 1 + j) for j, name in enumerate(FEATURES)}}


def app_with(
    version: int | None = 1, events=None, quality: RollingQuality | None = None, **settings
):
    if "max_event_bytes" in settings:
        settings["limits"] = EventLimits(max_event_bytes=settings.pop("max_event_bytes"))
    holder = ModelHolder(settings.get("quantize", "none"))
    if version is not None:
        holder.offer(snapshot(version))
    app = create_app(ServeSettings(**settings), Backend(holder, quality, events))
    return app, holder
