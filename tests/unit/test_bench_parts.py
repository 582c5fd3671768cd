"""The broker-free parts of `learnstream bench` run against the library as it
is (a bench that only breaks when someone runs it is no bench)."""

from __future__ import annotations

from stream.tools.bench import decoding_us


def test_decoding_costs_are_measured_for_both_decoders_and_both_encoders():
    result = decoding_us(3)
    assert result["features"] == 3
    for name in ("general_us", "batch_us", "packb_us", "packer_us"):
        assert result[name] > 0, name
