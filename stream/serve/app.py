"""The HTTP API: a Starlette app around a :class:`~stream.serve.holder.ModelHolder`.

Endpoints (docs/serving.md): ``POST /v1/predict``, ``GET /v1/model``,
``GET /v1/status``, ``GET /v1/series``, ``POST /v1/events``, ``GET /healthz``,
``GET /metrics``, ``GET /`` (the live dashboard) and its ``/static/`` files.
Nothing a client sends can make it answer 500: bodies are bounded and parsed
by code that turns every failure into 400, 413 or 422, and the guard around
the app turns anything unforeseen into a 500 that is logged with its
traceback (a bug of ours, never expected).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import msgpack
import orjson
from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from stream.config import ServeSettings
from stream.errors import BadEvent, StreamError
from stream.events.codec import prediction_record
from stream.kafka.transport import Producer
from stream.observe.series import Series
from stream.serve.body import MalformedBody, Parsed, TooManyEvents, parse
from stream.serve.holder import ModelHolder
from stream.serve.page import PAGE
from stream.serve.quality import QUALITY_KEYS, RateMeter, RollingQuality

logger = logging.getLogger(__name__)

# Endpoints open without the bearer token: probes and scrapers carry no secrets,
# and the dashboard's page and its static files hold no data (a browser cannot
# put a header on the page it navigates to; the page asks for the token and
# sends it with each data request).
OPEN_PATHS = frozenset({"/", "/healthz", "/metrics"})
STATIC_PREFIX = "/static/"
KNOWN_PATHS = frozenset(
    {
        "/",
        "/v1/predict",
        "/v1/model",
        "/v1/status",
        "/v1/series",
        "/v1/events",
        "/healthz",
        "/metrics",
    }
)
# The files under /static/ (stream/serve/static, shipped in the wheel), by name.
STATIC_TYPES = {
    "uPlot.iife.min.js": "text/javascript; charset=utf-8",
    "uPlot.min.css": "text/css; charset=utf-8",
    "uPlot.LICENSE": "text/plain; charset=utf-8",
}
# Request latency buckets, seconds: the API answers in well under a millisecond
# for one event and in a few milliseconds for a batch of 1,000.
LATENCY_BUCKETS_S = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    1.0,
)
MAX_ERRORS_LISTED = 100

EventsProducer = Callable[[], Producer]


class BodyTooLarge(StreamError):
    """The request body is over ``max_body_bytes`` (HTTP 413)."""


@dataclass
class Backend:
    """What the app serves from. ``events``: gives the producer for POST /v1/events
    (None: there is no broker); ``quality``: the predictions topic's rolling quality;
    ``series``: the dashboard's series (fed by :mod:`stream.serve.runtime`)."""

    holder: ModelHolder
    quality: RollingQuality | None = None
    events: EventsProducer | None = None
    series: Series = field(default_factory=Series)


def _json(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(obj), status, headers, media_type="application/json")


def _error(status: int, error: str, message: str, **extra: Any) -> Response:
    return _json({"error": error, "message": message, **extra}, status)


def _unprocessable(parsed: Parsed) -> Response:
    errors = parsed.errors
    if not parsed.batch:
        exc = errors[0][1]
        return _json({"error": "invalid_event", "reason": exc.reason, "message": exc.message}, 422)
    listed = [
        {"index": i, "reason": exc.reason, "message": exc.message}
        for i, exc in errors[:MAX_ERRORS_LISTED]
    ]
    return _json({"error": "invalid_event", "invalid": len(errors), "errors": listed}, 422)


class _Metrics:
    """The app's Prometheus registry: its own, so several apps can live in one process."""

    def __init__(self, holder: ModelHolder) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "learnstream_serve_requests",
            "HTTP requests answered, by endpoint and status",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "learnstream_serve_request_seconds",
            "Time from request start to the end of the response, by endpoint",
            ["endpoint"],
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.scored = Counter(
            "learnstream_serve_events_scored",
            "Events scored by /v1/predict",
            registry=self.registry,
        )
        self.produced = Counter(
            "learnstream_serve_events_produced",
            "Events acknowledged by the broker through /v1/events",
            registry=self.registry,
        )
        ProcessCollector(registry=self.registry)  # process CPU seconds, resident memory
        self.registry.register(_ModelCollector(holder))


class _ModelCollector:
    def __init__(self, holder: ModelHolder) -> None:
        self.holder = holder

    def collect(self):
        served = self.holder.current
        version = GaugeMetricFamily(
            "learnstream_serve_model_version", "Global model version served (-1: none yet)"
        )
        version.add_metric([], served.version if served else -1)
        yield version
        learned = GaugeMetricFamily(
            "learnstream_serve_model_learned_events", "Labeled events the served model learned"
        )
        learned.add_metric([], served.snapshot.n_learned if served else 0)
        yield learned
        age = GaugeMetricFamily(
            "learnstream_serve_model_age_seconds", "Seconds since the served version was made"
        )
        created = served.snapshot.created_at if served else 0.0
        age.add_metric([], time.time() - created if created else float("nan"))
        yield age
        swaps = CounterMetricFamily(
            "learnstream_serve_model_swaps", "Newer global versions swapped in while serving"
        )
        swaps.add_metric([], self.holder.swaps)
        yield swaps


class _Guard:
    """Pure ASGI middleware: bearer token, request metrics, and the last-resort 500.

    Written against ASGI directly (not BaseHTTPMiddleware) because it runs on
    every request and must cost microseconds.
    """

    def __init__(self, app, token: str | None, metrics: _Metrics, rate: RateMeter) -> None:
        self.app = app
        self.token = token.encode() if token else None
        self.metrics = metrics
        self.rate = rate
        self._counts: dict[tuple[str, int], Any] = {}
        self._latencies: dict[str, Any] = {}

    def _authorized(self, scope) -> bool:
        expected = self.token
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, provided = value.partition(b" ")
                return scheme.lower() == b"bearer" and hmac.compare_digest(
                    provided.strip(), expected
                )
        return False

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        path = scope["path"]
        is_static = path.startswith(STATIC_PREFIX)
        endpoint = path if path in KNOWN_PATHS else "/static" if is_static else "other"
        status = 500
        sent_start = False

        async def send_and_record(message) -> None:
            nonlocal status, sent_start
            if message["type"] == "http.response.start":
                status = message["status"]
                sent_start = True
            await send(message)

        try:
            if (
                self.token is not None
                and path not in OPEN_PATHS
                and not is_static
                and not self._authorized(scope)
            ):
                await _error(401, "unauthorized", "a valid bearer token is required")(
                    scope, receive, send_and_record
                )
                return
            await self.app(scope, receive, send_and_record)
        except Exception:
            logger.exception("request failed path=%s", path)
            if not sent_start:
                await _error(500, "internal", "internal error")(scope, receive, send_and_record)
        finally:
            self.rate.count += 1
            self._count(endpoint, status).inc()
            self._latency(endpoint).observe(time.perf_counter() - started)

    def _count(self, endpoint: str, status: int):
        # prometheus_client's labels() costs microseconds per call; the children are few.
        child = self._counts.get((endpoint, status))
        if child is None:
            child = self._counts[endpoint, status] = self.metrics.requests.labels(
                endpoint, str(status)
            )
        return child

    def _latency(self, endpoint: str):
        child = self._latencies.get(endpoint)
        if child is None:
            child = self._latencies[endpoint] = self.metrics.latency.labels(endpoint)
        return child


class _AsgiEndpoint:
    """Marks a coroutine function as a raw ASGI endpoint for Starlette's Route
    (a plain function would be taken for a Request -> Response handler)."""

    def __init__(self, endpoint) -> None:
        self.endpoint = endpoint

    async def __call__(self, scope, receive, send) -> None:
        await self.endpoint(scope, receive, send)


def _header(scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return value
    return None


async def _read_body(scope, receive, limit: int) -> bytes:
    """The whole body, or BodyTooLarge as soon as it is known to exceed ``limit``."""
    length = _header(scope, b"content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise BodyTooLarge(f"body is {int(length)} bytes, limit is {limit}")
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"body is over the limit of {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def create_app(settings: ServeSettings, backend: Backend) -> Starlette:
    """The app. Threads that feed ``backend`` (model topic, predictions topic) are
    the caller's: see :mod:`stream.serve.runtime`."""
    holder = backend.holder
    metrics = _Metrics(holder)
    rate = RateMeter()
    max_body, limits, max_batch = (
        settings.max_body_bytes,
        settings.limits,
        settings.max_batch_events,
    )

    async def _events_from(scope, receive) -> Parsed | Response:
        try:
            body = await _read_body(scope, receive, max_body)
            return parse(body, limits, max_batch)
        except BodyTooLarge as exc:
            return _error(413, "body_too_large", str(exc))
        except TooManyEvents as exc:
            return _error(413, "batch_too_large", str(exc))
        except MalformedBody as exc:
            return _error(400, "malformed_body", str(exc))

    async def predict(scope, receive, send) -> None:
        """Raw ASGI (no Request/Response objects): the hot endpoint, where they
        would cost a third of the time of a one-event request."""
        parsed = await _events_from(scope, receive)
        if isinstance(parsed, Response):
            await parsed(scope, receive, send)
            return
        if parsed.errors:
            await _unprocessable(parsed)(scope, receive, send)
            return
        served = holder.current  # read once: the whole request is scored by this version
        if served is None:
            await _error(503, "no_model", "no global model loaded yet")(scope, receive, send)
            return
        version, events = served.version, parsed.items
        if len(events) == 1:
            ps = [served.predict_proba(events[0].x)]  # type: ignore[union-attr]
        else:
            ps = served.predict_proba_many([event.x for event in events])  # type: ignore[union-attr]
        out = [
            prediction_record(event.id, p, version)
            for event, p in zip(events, ps, strict=True)  # type: ignore[union-attr]
        ]
        metrics.scored.inc(len(out))
        answer = out if parsed.batch else out[0]
        accept = _header(scope, b"accept")
        if accept is not None and b"application/msgpack" in accept:
            body, content_type = msgpack.packb(answer), b"application/msgpack"
        else:
            body, content_type = orjson.dumps(answer), b"application/json"
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", content_type),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def model(request: Request) -> Response:
        served = holder.current
        if served is None:
            return _error(503, "no_model", "no global model loaded yet")
        raw_top = request.query_params.get("top", "10")
        if not raw_top.isdigit() or not 0 <= int(raw_top) <= 1000:
            return _error(
                422, "invalid_query", f"top must be an integer 0-1000, got {raw_top!r:.40}"
            )
        snapshot = served.snapshot
        weights = snapshot.state.weights
        top = sorted(weights.items(), key=lambda kv: abs(kv[1]), reverse=True)[: int(raw_top)]
        created = snapshot.created_at
        return _json(
            {
                "model_version": served.version,
                "n_learned": snapshot.n_learned,
                "created_at": created or None,
                "age_s": time.time() - created if created else None,
                "n_features": len(weights),
                "intercept": snapshot.state.intercept,
                "top_weights": [{"feature": k, "weight": w} for k, w in top],
                "model_config": snapshot.model_config,
                "quantize": served.quantize,
                "loaded_at": served.loaded_at,
                "swaps": holder.swaps,
            }
        )

    async def status(request: Request) -> Response:
        served = holder.current
        created = served.snapshot.created_at if served else 0.0
        quality = (
            backend.quality.summary()
            if backend.quality
            else dict.fromkeys(QUALITY_KEYS, None) | {"n": 0}
        )
        return _json(
            {
                "model_version": served.version if served else None,
                "n_learned": served.snapshot.n_learned if served else None,
                "age_s": time.time() - created if created else None,
                "swaps": holder.swaps,
                "requests_per_s": rate.rate(),
                "quality": quality,
            }
        )

    async def events(request: Request) -> Response:
        parsed = await _events_from(request.scope, request.receive)
        if isinstance(parsed, Response):
            return parsed
        if parsed.errors:
            return _unprocessable(parsed)
        if backend.events is None:
            return _error(503, "no_broker", "serving offline: there is no broker to produce to")
        try:
            sent = await run_in_threadpool(
                _produce, backend.events, settings.topics.features, parsed, settings
            )
        except StreamError as exc:
            logger.warning("events not delivered: %s", exc)
            return _error(503, "not_delivered", f"the broker did not acknowledge: {exc}")
        metrics.produced.inc(sent)
        return _json({"accepted": sent, "topic": settings.topics.features}, 202)

    async def healthz(request: Request) -> Response:
        served = holder.current
        if served is None:
            return _json({"status": "no_model"}, 503)
        return _json({"status": "ok", "model_version": served.version})

    async def prometheus(request: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def series(request: Request) -> Response:
        return _json(backend.series.as_json(), headers={"Cache-Control": "no-store"})

    async def page(request: Request) -> Response:
        return HTMLResponse(PAGE, headers={"Cache-Control": "no-store"})

    static_files = _static_files()

    async def static(request: Request) -> Response:
        found = static_files.get(request.path_params["name"])
        if found is None:
            return _error(404, "not_found", "no such static file")
        body, content_type = found
        return Response(body, headers={"Cache-Control": "max-age=3600"}, media_type=content_type)

    routes = [
        Route("/", page, methods=["GET"]),
        Route("/v1/predict", _AsgiEndpoint(predict), methods=["POST"]),
        Route("/v1/model", model, methods=["GET"]),
        Route("/v1/status", status, methods=["GET"]),
        Route("/v1/series", series, methods=["GET"]),
        Route(STATIC_PREFIX + "{name}", static, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", prometheus, methods=["GET"]),
    ]
    if settings.events_enabled:
        routes.append(Route("/v1/events", events, methods=["POST"]))

    @contextlib.asynccontextmanager
    async def lifespan(app):
        async def tick() -> None:
            while True:
                rate.tick()
                await asyncio.sleep(1.0)

        task = asyncio.create_task(tick())
        try:
            yield
        finally:
            task.cancel()

    app = Starlette(routes=routes, lifespan=lifespan)
    app.add_middleware(_Guard, token=settings.token, metrics=metrics, rate=rate)
    app.state.metrics = metrics
    return app


def _static_files() -> dict[str, tuple[bytes, str]]:
    """The dashboard's vendored files, read once from the package (a wheel or a checkout)."""
    folder = resources.files("stream.serve") / "static"
    return {name: (folder.joinpath(name).read_bytes(), kind) for name, kind in STATIC_TYPES.items()}


def _produce(events: EventsProducer, topic: str, parsed: Parsed, settings: ServeSettings) -> int:
    """Send every event's bytes, keyed by its id, and wait for the acknowledgement."""
    producer = events()
    for item, raw in zip(parsed.items, parsed.raw, strict=True):
        assert not isinstance(item, BadEvent)
        producer.send(topic, raw, str(item.id).encode())
    producer.flush(settings.delivery_timeout_s)
    return len(parsed.items)
