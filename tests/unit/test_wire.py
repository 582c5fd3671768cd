"""The packed model state: exact round trips, and a size that follows the features."""

from __future__ import annotations

import math

import msgpack
from hypothesis import given
from hypothesis import strategies as st

from stream.model.state import ModelState, pack_state, unpack_state
from stream.sync.contribution import Contribution

names = st.text(min_size=1, max_size=12)
values = st.floats(allow_nan=False)
maps = st.dictionaries(names, values, max_size=30)


@given(maps, maps, maps, maps, maps, maps, values, st.integers(0, 2**40))
def test_pack_then_unpack_gives_the_same_state(w, c, m, v, z, n, intercept, n_learned):
    state = ModelState(w, intercept, c, m, v, z, n, n_learned)
    assert unpack_state(msgpack.unpackb(msgpack.packb(pack_state(state)), raw=False)) == state


def test_a_state_of_100000_features_packs_each_name_once_and_fits_the_internal_topics():
    """100,000 names with a weight and scaler statistics each: above Apache
    Kafka's default 1 MB record limit even compressed, which is why learnstream
    creates its internal topics with a 64 MiB limit; packed, each name is
    stored once (not once per map)."""
    import gzip

    features = {f"feature_{i}": math.sin(i) for i in range(100_000)}
    delta = ModelState(
        weights=features,
        scaler_counts=dict.fromkeys(features, 1.0),
        scaler_means=features,
        scaler_vars=dict.fromkeys(features, 0.0),
        n_learned=100_000,
    )
    payload = Contribution("w", 0, 0, {0: (0, 100_000)}, delta, 0.0).to_bytes()
    plain = msgpack.packb({"weights": features}, use_bin_type=True)
    assert len(payload) < 4.5 * len(plain) / 2  # names once: well under 4 plain maps
    assert Contribution.from_bytes(payload).delta == delta
    print(
        f"\n100,000 features: packed {len(payload):,} bytes, gzip {len(gzip.compress(payload)):,}"
    )
