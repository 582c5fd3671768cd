"""The freshness bench's stream: SEA whose concept switches where it says."""

from __future__ import annotations

import pytest

from stream.tools.freshbench import FreshnessSettings, sea_rows

# river's SEA: the label is whether the first two features sum to more than the
# variant's threshold.
THRESHOLDS = {0: 8.0, 1: 9.0, 2: 7.0, 3: 9.5}


def test_the_sea_stream_switches_its_concept_at_switch_at():
    settings = FreshnessSettings(events=4000, switch_at=1500, window=1000, before=0, after=3)
    rows = list(sea_rows(settings, "run"))
    assert len(rows) == 4000
    assert [event_id for event_id, _, _ in rows[:2]] == ["run-0", "run-1"]
    for i, (_, x, y) in enumerate(rows):
        assert set(x) == {"x0", "x1", "x2"}
        threshold = THRESHOLDS[0] if i < 1500 else THRESHOLDS[3]
        assert y == (x["x0"] + x["x1"] > threshold), i
    # Between the two thresholds the concepts disagree, and such events occur.
    disputed = [x for _, x, _ in rows[1500:] if 8.0 < x["x0"] + x["x1"] <= 9.5]
    assert len(disputed) > 50


def test_a_window_past_the_end_is_refused():
    with pytest.raises(ValueError, match="passes the end of 2000 events"):
        FreshnessSettings(events=2000, switch_at=1500, window=1000)
