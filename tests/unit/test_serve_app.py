"""The HTTP API: every status code a client can get, and what each answer holds."""

from __future__ import annotations

import json
import time
from pathlib import Path

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from stream.config import ServeSettings
from stream.errors import BadEvent, DeliveryError
from stream.events.codec import decode_event
from stream.observe.series import Series
from stream.serve.app import Backend, create_app
from stream.serve.holder import ModelHolder, serving
from tests.unit.serve_fixtures import app_with, event, snapshot

TOKEN = "s3cret-token"
STATIC = Path(__file__).parents[2] / "stream" / "serve" / "static"


@pytest.fixture()
def client():
    app, _ = app_with(version=3)
    with TestClient(app) as c:
        yield c


def test_predict_one_event_gives_the_model_p(client):
    ev = event(1)
    r = client.post("/v1/predict", json=ev)
    assert r.status_code == 200
    body = r.json()
    expected = serving(snapshot(3)).predict_proba(ev["x"])
    assert body == {
        "id": "e-1",
        "p": expected,
        "y_pred": int(expected >= 0.5),
        "model_version": 3,
    }


def test_label_is_ignored(client):
    ev = event(2)
    plain = client.post("/v1/predict", json=ev).json()
    labeled = client.post("/v1/predict", json={**ev, "y": 1}).json()
    assert plain == labeled


def test_batch_answers_in_order(client):
    events = [event(i) for i in range(50)]
    r = client.post("/v1/predict", json=events)
    assert r.status_code == 200
    ids = [item["id"] for item in r.json()]
    assert ids == [e["id"] for e in events]
    singles = [client.post("/v1/predict", json=e).json() for e in events]
    assert r.json() == singles


def test_msgpack_in_and_out(client):
    events = [event(i) for i in range(5)]
    body = msgpack.packb(events)
    r = client.post(
        "/v1/predict",
        content=body,
        headers={"content-type": "application/msgpack", "accept": "application/msgpack"},
    )
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/msgpack"
    assert msgpack.unpackb(r.content) == client.post("/v1/predict", json=events).json()
    single = client.post(
        "/v1/predict",
        content=msgpack.packb(events[0]),
        headers={"content-type": "application/msgpack"},
    )
    assert single.json()["id"] == "e-0"


@pytest.mark.parametrize(
    "bad",
    [
        {"x": {"a": 1.0}},
        {"id": True, "x": {"a": 1.0}},
        {"id": "a"},
        {"id": "a", "x": [1, 2]},
        {"id": "a", "x": {"a": None}},
        {"id": "a", "x": {"a": 1.0}, "y": 2},
        {"id": "a", "x": {"a": 1.0}, "ts": "yesterday"},
        [1, 2],
        "just a string",
    ],
    ids=repr,
)
def test_invalid_event_gets_422_with_the_dead_letter_reason_and_message(client, bad):
    raw = json.dumps(bad).encode()
    r = client.post("/v1/predict", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 422
    body = r.json()
    if isinstance(bad, list):
        # An array: each element is judged as the worker judges one record.
        expected = []
        for i, element in enumerate(bad):
            try:
                decode_event(json.dumps(element).encode())
            except BadEvent as exc:
                expected.append({"index": i, "reason": exc.reason, "message": exc.message})
        assert body["errors"] == expected
        return
    with pytest.raises(BadEvent) as info:
        decode_event(raw)
    assert (body["reason"], body["message"]) == (info.value.reason, info.value.message)


def test_non_finite_feature_is_422_non_finite(client):
    r = client.post(
        "/v1/predict",
        content=b'{"id": 1, "x": {"a": NaN}}',
        headers={"content-type": "application/json"},
    )
    assert (r.status_code, r.json()["reason"]) == (422, "non_finite_feature")
    r = client.post("/v1/predict", content=b'[{"id": 1, "x": {"a": Infinity}}]')
    assert (r.status_code, r.json()["errors"][0]["reason"]) == (422, "non_finite_feature")


def test_batch_with_one_bad_event_scores_nothing(client):
    events = [event(0), {"id": "bad", "x": {"a": None}}, event(2)]
    r = client.post("/v1/predict", json=events)
    assert r.status_code == 422
    assert r.json()["invalid"] == 1
    assert r.json()["errors"][0]["index"] == 1
    assert r.json()["errors"][0]["reason"] == "non_numeric_feature"


def test_oversized_event_is_422_oversized():
    app, _ = app_with(max_event_bytes=100)
    with TestClient(app) as c:
        big = {"id": 1, "x": {f"feature_{i}": 1.0 for i in range(20)}}
        r = c.post("/v1/predict", json=big)
        assert (r.status_code, r.json()["reason"]) == (422, "oversized")


@pytest.mark.parametrize(
    "raw",
    [b"{not json", b"", b"   ", b"[1, 2", b'{"id": 1, "x": {}} trailing', b"\x93\x01"],
    ids=repr,
)
def test_malformed_body_gets_400(client, raw):
    r = client.post("/v1/predict", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert r.json()["error"] == "malformed_body"


def test_body_over_the_limit_gets_413():
    app, _ = app_with(max_body_bytes=1000, max_event_bytes=500)
    with TestClient(app) as c:
        r = c.post("/v1/predict", json=[event(i) for i in range(20)])
        assert (r.status_code, r.json()["error"]) == (413, "body_too_large")

        def chunks():  # no Content-Length: the limit holds while streaming
            for i in range(20):
                yield json.dumps(event(i)).encode()

        r = c.post("/v1/predict", content=chunks())
        assert (r.status_code, r.json()["error"]) == (413, "body_too_large")


def test_batch_over_the_limit_gets_413():
    app, _ = app_with(max_batch_events=10)
    with TestClient(app) as c:
        r = c.post("/v1/predict", json=[event(i) for i in range(11)])
        assert (r.status_code, r.json()["error"]) == (413, "batch_too_large")
        r = c.post("/v1/predict", content=msgpack.packb([event(i) for i in range(11)]))
        assert (r.status_code, r.json()["error"]) == (413, "batch_too_large")
        assert c.post("/v1/predict", json=[event(i) for i in range(10)]).status_code == 200


def test_before_any_model_healthz_and_predict_are_503():
    app, holder = app_with(version=None)
    with TestClient(app) as c:
        assert c.get("/healthz").status_code == 503
        assert c.post("/v1/predict", json=event(1)).status_code == 503
        assert c.get("/v1/model").status_code == 503
        holder.offer(snapshot(1))
        assert c.get("/healthz").json() == {"status": "ok", "model_version": 1}
        assert c.post("/v1/predict", json=event(1)).json()["model_version"] == 1


def test_model_endpoint(client):
    body = client.get("/v1/model?top=3").json()
    snap = snapshot(3)
    assert body["model_version"] == 3
    assert body["n_learned"] == snap.n_learned
    assert body["n_features"] == len(snap.state.weights)
    assert body["age_s"] >= 0
    top = sorted(snap.state.weights.items(), key=lambda kv: abs(kv[1]), reverse=True)[:3]
    assert [(w["feature"], w["weight"]) for w in body["top_weights"]] == top
    assert client.get("/v1/model?top=x").status_code == 422


def test_swap_serves_the_new_version_and_counts_it():
    app, holder = app_with(version=1)
    with TestClient(app) as c:
        assert holder.offer(snapshot(2, seed=9))
        assert not holder.offer(snapshot(1, seed=5))  # older versions never go back in
        ev = event(4)
        body = c.post("/v1/predict", json=ev).json()
        assert body["model_version"] == 2
        assert body["p"] == serving(snapshot(2, seed=9)).predict_proba(ev["x"])
        assert holder.swaps == 1
        assert "learnstream_serve_model_swaps_total 1.0" in c.get("/metrics").text


def test_metrics_count_requests_by_status_and_latency(client):
    client.post("/v1/predict", json=event(1))
    client.post("/v1/predict", content=b"{oops")
    text = client.get("/metrics").text
    assert 'learnstream_serve_requests_total{endpoint="/v1/predict",status="200"} 1.0' in text
    assert 'learnstream_serve_requests_total{endpoint="/v1/predict",status="400"} 1.0' in text
    assert 'learnstream_serve_request_seconds_count{endpoint="/v1/predict"} 2.0' in text
    assert "learnstream_serve_model_version 3.0" in text
    assert "process_cpu_seconds_total" in text
    assert "process_resident_memory_bytes" in text


def test_unknown_path_404_and_wrong_method_405(client):
    assert client.get("/nope").status_code == 404
    assert client.get("/v1/predict").status_code == 405


class _Producer:
    def __init__(self, fail: bool = False) -> None:
        self.sent: list[tuple[str, bytes, bytes | None]] = []
        self.flushed = 0
        self.fail = fail

    def send(self, topic, value, key=None, headers=None, partition=None):
        self.sent.append((topic, value, key))

    def flush(self, timeout_s):
        if self.fail:
            raise DeliveryError("1 record not acknowledged")
        self.flushed += 1


def test_events_are_produced_then_202():
    producer = _Producer()
    app, _ = app_with(events=lambda: producer)
    with TestClient(app) as c:
        single = json.dumps(event(1)).encode()
        r = c.post("/v1/events", content=single)
        assert (r.status_code, r.json()["accepted"]) == (202, 1)
        assert producer.sent == [("features", single, b"e-1")]
        r = c.post("/v1/events", content=msgpack.packb([event(2), event(3)]))
        assert (r.status_code, r.json()["accepted"]) == (202, 2)
        assert [decode_event(v).id for _, v, _ in producer.sent[1:]] == ["e-2", "e-3"]
        assert producer.flushed == 2
        r = c.post("/v1/events", json={"id": 1, "x": {"a": None}})
        assert (r.status_code, r.json()["reason"]) == (422, "non_numeric_feature")
        assert len(producer.sent) == 3


def test_events_not_acknowledged_is_503():
    app, _ = app_with(events=lambda: _Producer(fail=True))
    with TestClient(app) as c:
        assert c.post("/v1/events", json=event(1)).status_code == 503


def test_events_offline_is_503_and_switched_off_is_404():
    app, _ = app_with(events=None)
    with TestClient(app) as c:
        assert c.post("/v1/events", json=event(1)).json()["error"] == "no_broker"
    app, _ = app_with(events=lambda: _Producer(), events_enabled=False)
    with TestClient(app) as c:
        assert c.post("/v1/events", json=event(1)).status_code == 404


def test_token_required_everywhere_but_healthz_metrics_and_the_page():
    app, _ = app_with(token=TOKEN, events=lambda: _Producer())
    with TestClient(app) as c:
        for method, path in [
            ("POST", "/v1/predict"),
            ("GET", "/v1/model"),
            ("GET", "/v1/status"),
            ("GET", "/v1/series"),
            ("POST", "/v1/events"),
            ("GET", "/nope"),
        ]:
            kwargs = {"json": event(1)} if method == "POST" else {}
            assert c.request(method, path, **kwargs).status_code == 401, path
            wrong = {"Authorization": "Bearer not-it"}
            assert c.request(method, path, headers=wrong, **kwargs).status_code == 401, path
            right = {"Authorization": f"Bearer {TOKEN}"}
            assert c.request(method, path, headers=right, **kwargs).status_code != 401, path
        assert c.get("/healthz").status_code == 200
        assert c.get("/metrics").status_code == 200
        # A browser cannot set the header on the page it opens: the page and its
        # static files hold no data and are open; the page asks for the token.
        assert c.get("/").status_code == 200
        assert c.get("/static/uPlot.iife.min.js").status_code == 200
        assert c.get("/static/nope.js").status_code == 404
        # The token is never taken from the query string.
        assert c.get(f"/v1/model?access_token={TOKEN}").status_code == 401
        assert c.get(f"/v1/series?access_token={TOKEN}").status_code == 401


def test_status_and_page(client):
    status = client.get("/v1/status").json()
    assert status["model_version"] == 3
    assert status["quality"] == {
        "n": 0,
        "accuracy": None,
        "log_loss": None,
        "calibration": None,
        "normalized_entropy": None,
    }
    page = client.get("/")
    assert page.status_code == 200
    assert 'id="version"' in page.text and "/v1/status" in page.text
    assert "/v1/series" in page.text and "/static/uPlot.iife.min.js" in page.text


def test_static_files_are_the_vendored_chart_library_with_its_licence(client):
    js = client.get("/static/uPlot.iife.min.js")
    assert js.headers["content-type"].startswith("text/javascript")
    assert js.content == (STATIC / "uPlot.iife.min.js").read_bytes()
    assert client.get("/static/uPlot.min.css").headers["content-type"].startswith("text/css")
    assert "MIT License" in client.get("/static/uPlot.LICENSE").text


def test_series_endpoint_serves_the_backends_series_in_the_documented_shape():
    series = Series(step_s=1.0, window_s=10.0)
    holder = ModelHolder()
    app = create_app(ServeSettings(), Backend(holder, series=series))
    now = time.time()
    series.add_predictions([{"p": 0.8, "y": 1, "ts_record": 1.0, "ts_scored": 1.5}] * 4, now - 3)
    series.add_dead_letters(["not_json"], now - 3)
    series.add_model(2, 10, now - 5, now - 3)
    with TestClient(app) as c:
        body = c.get("/v1/series").json()
    assert body["step_s"] == 1.0 and body["window_s"] == 10.0
    columns = [
        "scored_per_s",
        "learned_per_s",
        "latency_p50_s",
        "latency_p99_s",
        "accuracy",
        "log_loss",
        "roc_auc",
        "labeled_in_window",
        "model_version",
        "model_age_s",
    ]
    assert set(body) == {"step_s", "window_s", "t", "dead_letters_per_s", "lag", "drifts", *columns}
    n = len(body["t"])
    assert n >= 2 and all(len(body[name]) == n for name in columns)
    assert body["scored_per_s"][0] == 4.0 and body["latency_p50_s"][0] == 0.5
    assert body["accuracy"][0] == 1.0 and body["labeled_in_window"][0] == 4
    assert body["model_version"][0] == 2
    assert body["dead_letters_per_s"] == {"not_json": [1.0] + [0.0] * (n - 1)}
    assert body["lag"] == {} and body["drifts"] == []


def test_holder_swap_is_one_reference():
    holder = ModelHolder()
    holder.offer(snapshot(1))
    before = holder.current
    holder.offer(snapshot(2))
    assert before.version == 1  # what a request holds is never changed under it
    assert holder.current.version == 2


_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=12,
)
_bodies = st.one_of(
    st.binary(max_size=300),
    _json_values.map(lambda v: json.dumps(v).encode()),
    _json_values.map(lambda v: msgpack.packb(v)),
    st.fixed_dictionaries(
        {"id": _json_values, "x": st.dictionaries(st.text(max_size=3), _json_values)}
    ).map(lambda v: json.dumps(v).encode()),
    st.lists(st.fixed_dictionaries({"id": _json_values, "x": _json_values}), max_size=4).map(
        lambda v: msgpack.packb(v)
    ),
)
_app, _ = app_with(version=1, events=lambda: _Producer(), max_body_bytes=200, max_event_bytes=150)
_client = TestClient(_app)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=_bodies, path=st.sampled_from(["/v1/predict", "/v1/events"]))
def test_no_request_body_gives_a_500(body, path):
    r = _client.post(path, content=body)
    assert r.status_code in (200, 202, 400, 413, 422), (r.status_code, r.text)


def test_quantized_serving_scores_with_the_quantized_weights():
    from dataclasses import replace

    from stream.model.quantize import quantize_state
    from stream.sync.globalmodel import model_of

    app, _ = app_with(version=4, quantize="int8")
    with TestClient(app) as c:
        ev = event(3)
        snap = snapshot(4)
        expected = model_of(replace(snap, state=quantize_state(snap.state, "int8")))
        assert c.post("/v1/predict", json=ev).json()["p"] == expected.predict_proba(ev["x"])
        assert c.get("/v1/model").json()["quantize"] == "int8"
