"""The wait loop every bounded wait uses (hpcmarl/comm/protocol.py: poll_until, Backoff), on a fake clock."""
import pytest

from hpcmarl.comm import protocol


@pytest.fixture
def clock(monkeypatch):
    """A fake monotonic clock that time.sleep advances; returns the list of sleeps."""
    now, sleeps = [0.0], []

    def sleep(s):
        sleeps.append(s)
        now[0] += s

    monkeypatch.setattr(protocol.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(protocol.time, "sleep", sleep)
    return now, sleeps


def test_a_wait_is_at_most_1ms_or_1_percent_late_and_long_waits_poll_rarely(clock):
    now, sleeps = clock
    b = protocol.Backoff()
    waited = []
    while now[0] < 10.0:
        waited.append(now[0])
        b.wait()
    assert sleeps[0] == 0.0 and sleeps[1] == pytest.approx(0.0002)
    for t, s in zip(waited, sleeps):
        assert s <= max(0.001, 0.01 * t) + 1e-12, (t, s)  # never later than 1 ms or 1% of the time waited
    assert max(sleeps) > 0.05  # a 10 s wait ends up sleeping ~0.1 s between polls
    assert len(sleeps) < 1000  # instead of 10,000 polls at 1 ms
    b.reset()
    b.wait()
    b.wait()
    assert sleeps[-2:] == [0.0, pytest.approx(0.0002)]  # after work, polls are fast again


def test_poll_until_names_what_it_waited_for_after_its_bound(clock):
    now, _ = clock
    with pytest.raises(protocol.CommTimeout, match=r"timed out after 5s waiting for the moon"):
        protocol.poll_until(lambda: False, 5.0, "the moon")
    assert 5.0 < now[0] < 5.0 + 0.06  # at most 1% of the bound late
    calls = []
    protocol.poll_until(lambda: len(calls) > 3, 5.0, "x", meanwhile=lambda: calls.append(1) or True)
    assert len(calls) == 4  # meanwhile's work runs between tests, without sleeping
