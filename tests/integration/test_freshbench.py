"""The freshness bench runs on the broker and reports what it measured."""

from __future__ import annotations

import pytest

from stream.observe.quality import prequential, single_model_pairs
from stream.tools.freshbench import FreshnessSettings, run_freshness, sea_rows

pytestmark = pytest.mark.integration


@pytest.mark.timeout(300)
def test_the_freshness_bench_compares_the_pipeline_with_one_model_after_the_switch(kafka):
    settings = FreshnessSettings(
        events=3000, switch_at=1500, window=1000, rate=1500.0, workers=2, intervals=(0.5,)
    )
    result = run_freshness(settings, kafka)

    pairs = single_model_pairs(sea_rows(settings, "ref"), settings.model)
    assert result.single_after_switch == prequential(pairs[1500:2500]).accuracy
    assert result.single_whole == prequential(pairs).accuracy
    [run] = result.runs
    assert run["interval_s"] == 0.5
    # Every event got a prediction (the run raises otherwise), scored by merged models.
    assert run["versions"] > 0
    assert 0.5 < run["after_switch"] <= 1 and 0.5 < run["whole"] <= 1
    assert run["deficit_after_switch"] == round(
        100 * (result.single_after_switch - run["after_switch"]), 3
    )
    assert run["deficit_whole"] == round(100 * (result.single_whole - run["whole"]), 3)
    assert "merge interval  0.50 s" in result.format()
