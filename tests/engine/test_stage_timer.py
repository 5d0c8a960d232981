"""pantherseg.engine.stage_timer: seconds per stage, added up, also for a stage that raised."""

from __future__ import annotations

import pytest

from pantherseg.engine.stage_timer import StageTimer


def test_stages_add_up_in_the_order_first_seen_and_a_failing_stage_still_counts():
    ticks = iter([0.0, 2.0, 2.0, 2.5, 3.0, 4.0])
    timer = StageTimer(clock=lambda: next(ticks))
    with timer.stage("read"):
        pass
    with timer.stage("export"):
        pass
    with pytest.raises(ValueError), timer.stage("read"):
        raise ValueError("corrupt")
    timer.add("network", 7.0)
    assert timer.seconds == {"read": 3.0, "export": 0.5, "network": 7.0}
    assert list(timer.seconds) == ["read", "export", "network"]


def test_a_timer_adds_into_the_dict_it_is_given():
    timings = {"load": 1.0}
    timer = StageTimer(timings, clock=iter([0.0, 1.0]).__next__)
    with timer.stage("load"):
        pass
    assert timings == {"load": 2.0}
