"""Fault injection (hpcmarl/faults.py): one spec, parsed once, refused in one line when malformed."""
import pytest

from hpcmarl import faults


@pytest.fixture
def fault(monkeypatch):
    return lambda text: monkeypatch.setenv(faults.VARIABLE, text)


@pytest.mark.parametrize("text", ["1", "1:hang", "x:hang:2", "1:explode:2", "1:hang:soon", "1:hang:2:3", ":raise:1"])
def test_a_malformed_spec_is_refused_naming_the_variable(text):
    with pytest.raises(faults.FaultSpecError, match="HPCMARL_INJECT_FAULT"):
        faults.parse(text)


def test_parse():
    assert faults.parse("") is None
    assert faults.parse("3:hang:final") == faults.Fault(3, "hang", "final")
    assert faults.parse("0:nan:12") == faults.Fault(0, "nan", "12")


def test_a_fault_acts_only_on_its_rank_at_its_point(fault):
    fault("1:raise:2")
    faults.Hook(0).at(2)
    hook = faults.Hook(1)
    hook.at(3)
    hook.at("final")
    with pytest.raises(RuntimeError, match="injected fault on rank 1 at update 2"):
        hook.at(2)
    assert not hook.marked("nan", 2)  # an act is not a mark


def test_marks(fault):
    fault("2:stale:5")
    hook = faults.Hook(2)
    assert hook.marked("stale", 5) and not hook.marked("stale", 4) and not hook.marked("nan", 5)
    assert not faults.Hook(1).marked("stale", 5)  # another rank's
    hook.at(5)  # a mark does not act
    fault("")
    assert faults.spec() is None and not faults.Hook(2).marked("stale", 5)


class Policy:
    def __init__(self):
        self.loaded = []

    def load(self, flat, version):
        self.loaded.append(version)


def test_a_stale_fault_keeps_the_old_weights_at_its_version_only(fault):
    fault("2:stale:5")
    policy, other = Policy(), Policy()
    faults.Hook(2).arm(policy)
    faults.Hook(1).arm(other)  # another rank's fault: its policy is left as it is
    for v in range(3, 8):
        policy.load(None, v)
        other.load(None, v)
    assert policy.loaded == [3, 4, 6, 7] and other.loaded == [3, 4, 5, 6, 7]
    assert "load" not in vars(other)
    fault("2:nan:5")  # not a stale fault: nothing wrapped
    fresh = Policy()
    faults.Hook(2).arm(fresh)
    assert "load" not in vars(fresh)
