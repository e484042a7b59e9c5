"""`edgeasr bench server`'s arithmetic: RSS growth from minute medians, client config fields, start phases, the goal
verdict."""

from __future__ import annotations

import pytest

from edgeasr.bench.server import ServerBenchOptions, _client_config, goal, rss_growth_pct, start_offsets


def test_rss_growth_ignores_the_swing_of_line_decodes_but_sees_a_leak():
    swinging = [(5.0 * i, 300.0 + 150 * (i % 3)) for i in range(121)]  # 10 min, +0/150/300 MB every 5 s
    assert rss_growth_pct(swinging) == 0.0
    leaking = [(5.0 * i, 300.0 + 150 * (i % 3) + 0.5 * i) for i in range(121)]  # +60 MB over the soak
    assert 10 < rss_growth_pct(leaking) < 20


def test_client_config_fields_are_json_or_strings():
    assert _client_config(("end_of_turn=smart", "partials=false", "max_queue_seconds=1.5")) == {
        "end_of_turn": "smart", "partials": False, "max_queue_seconds": 1.5}
    with pytest.raises(SystemExit, match="KEY=VALUE"):
        _client_config(("end_of_turn",))


def test_spread_clients_start_at_distinct_points_of_the_speech_aligned_ones_together():
    assert start_offsets(4, 1000, "spread") == [0, 250, 500, 750]
    assert start_offsets(3, 1000, "aligned") == [0, 0, 0]
    with pytest.raises(SystemExit, match="phases"):
        start_offsets(2, 1000, "random")


def test_the_goal_needs_enough_clients_and_a_clean_soak():
    options = ServerBenchOptions(soak_target="m:rtn:4")
    soak = {"clients": 8, "p95_ms": 800.0, "dropped_seconds": 0.0, "errors": [], "rss_growth_pct": 1.2}
    report = {"ladders": [{"target": "m:rtn:4", "max_clients": 8}], "soak": soak}
    assert goal(report, options)["met"]
    assert not goal({**report, "soak": {**soak, "rss_growth_pct": 6.0}}, options)["met"]
    assert not goal({**report, "ladders": [{"target": "m:rtn:4", "max_clients": 6}]}, options)["met"]
    assert not goal({"ladders": report["ladders"]}, options)["met"]  # no soak: not shown
