"""The lead learner's progress line: its time estimate to the step budget or the wall-clock limit."""
import math

from hpcmarl.roles.common import Progress, duration


def row(steps, sps):
    return {"update": 10, "env_steps": steps, "sps": sps, "lag_mean": 0.0, "wall_time": 30.0,
            "return_window/agent": -60.0}


def test_duration_units():
    assert [duration(x) for x in (0, 45.4, 99, 100, 720, 5999, 6000, 11100)] == \
        ["0s", "45s", "99s", "2m", "12m", "100m", "1h40m", "3h05m"]


def test_eta_from_the_rate_to_the_budget():
    p = Progress(10, 1_000_000, ["agent"])
    line = p.line(row(400_000, 1_000))  # 600k steps left at 1,000/s: 600 s
    assert line.endswith(" | eta 10m") and "agent -60.0" in line
    assert p.eta(row(1_000_000, 1_000)) == ""  # budget reached
    assert p.eta(row(0, 0.0)) == "" and p.eta(row(0, math.nan)) == ""  # no rate yet


def test_a_nearer_wall_limit_is_shown_instead():
    p = Progress(10, 1_000_000, ["agent"], wall_left=lambda: 300.0)
    assert p.eta(row(400_000, 1_000)) == " | wall limit in 5m"
    p = Progress(10, 1_000_000, ["agent"], wall_left=lambda: 3000.0)
    assert p.eta(row(400_000, 1_000)) == " | eta 10m"
