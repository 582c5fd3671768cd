"""What the server scores with: exactly the offline model, whatever the client sends."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from stream.config import ModelSettings
from stream.serve.holder import serving
from stream.sync.globalmodel import model_of
from tests.unit.serve_fixtures import FEATURES, snapshot

SNAPSHOTS = [
    snapshot(1),
    snapshot(2, settings=ModelSettings(scale=False)),
    snapshot(3, settings=ModelSettings(optimizer="ftrl")),
]
_values = st.floats(-1e6, 1e6, allow_nan=False)
_names = st.sampled_from(FEATURES) | st.text(min_size=1, max_size=4)


@settings(max_examples=300, deadline=None)
@given(
    which=st.integers(0, len(SNAPSHOTS) - 1),
    items=st.lists(st.tuples(_names, _values), max_size=12),
)
def test_unknown_features_change_nothing_and_are_not_stored(which, items):
    snap = SNAPSHOTS[which]
    x = dict(items)
    served = serving(snap)
    offline = model_of(snap)  # score --offline's model, fed the event as it is
    assert served.predict_proba(x) == offline.predict_proba(x)
    assert served.model.state() == model_of(snap).state()  # nothing inserted
