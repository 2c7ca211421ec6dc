"""The per-rank watchdog (hpcmarl.comm.watchdog) without MPI: a guarded call that outlives its bound aborts once,
with one line naming the rank and what it waited for; calls within their bound and unguarded code never do."""
import threading
import time

from hpcmarl.comm import watchdog


def make(startup_s=0.3, run_s=0.3):
    fired = threading.Event()
    w = watchdog.Watchdog("rank 3 (actor) on node7", fired.set, startup_s, run_s, period=0.05)
    return w, fired


def test_a_guard_that_outlives_its_bound_aborts_once_with_one_line(capsys):
    w, fired = make()
    with w.guard("every learner's all-reduce of 10 values"):
        assert fired.wait(3.0), "the watchdog did not fire"
    w.stop()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("hpcmarl: rank 3 (actor) on node7: waited ")
    assert "for every learner's all-reduce of 10 values" in err[0] and "startup phase" in err[0]


def test_guards_within_their_bound_and_idle_time_never_fire():
    w, fired = make(run_s=0.5)
    w.phase = "run"
    for _ in range(5):
        with w.guard("a quick barrier"):
            time.sleep(0.05)
    time.sleep(0.8)  # no guard open: compute or idle time is never a wait
    assert not fired.is_set() and w.expired() is None
    w.stop()


def test_the_bound_is_the_phase_s_when_the_guard_opens_and_nested_guards_report_the_oldest():
    w, fired = make(startup_s=100.0, run_s=0.2)
    with w.guard("startup work"):
        assert w.expired(time.monotonic() + 1.0) is None  # startup bound: 100 s
    w.stop()
    w.phase = "run"
    with w.guard("outer wait"):
        with w.guard("inner wait", bound=50.0):
            line = w.expired(time.monotonic() + 1.0)
    assert line is not None and "for outer wait" in line and "run phase" in line
    assert w.expired(time.monotonic() + 100.0) is None  # closed guards are forgotten


def test_module_guard_is_a_no_op_without_install_and_watches_after_it():
    watchdog.uninstall()
    with watchdog.guard("anything"):  # serial tools, unit tests: nothing installed
        pass
    fired = threading.Event()
    w = watchdog.install("rank 0 (learner)", 0.2, 0.2, abort=fired.set)
    try:
        w.period = 0.05
        watchdog.set_phase("run")
        with watchdog.guard("the final checkpoint to be written"):
            assert fired.wait(3.0)
        assert "the final checkpoint to be written" in w.fired
    finally:
        watchdog.uninstall()
