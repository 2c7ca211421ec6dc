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
    faults.at(0, 2)
    faults.at(1, 3)
    faults.at(1, "final")
    with pytest.raises(RuntimeError, match="injected fault on rank 1 at update 2"):
        faults.at(1, 2)
    assert not faults.marked(1, "nan", 2)  # an act is not a mark


def test_marks(fault):
    fault("2:stale:5")
    assert faults.marked(2, "stale", 5) and not faults.marked(2, "stale", 4) and not faults.marked(2, "nan", 5)
    faults.at(2, 5)  # a mark does not act
    fault("")
    assert faults.spec() is None and not faults.marked(2, "stale", 5)
