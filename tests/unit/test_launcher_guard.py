"""The launcher guard (hpcmarl.comm.launcher): an aborted job ends its mpirun even when a node does not answer."""
import os
import shutil
import subprocess
import sys
import time

import pytest

from hpcmarl.comm import launcher


@pytest.fixture
def fake_mpirun(tmp_path):
    """A process named ``mpirun`` (a copy of sleep) that would wait for a minute, like mpirun for a frozen node."""
    exe = tmp_path / "mpirun"
    shutil.copy(shutil.which("sleep"), exe)
    err = open(tmp_path / "mpirun.err", "w")
    p = subprocess.Popen([str(exe), "60"], stderr=err)
    yield p, tmp_path / "mpirun.err"
    p.kill()
    p.wait()
    err.close()


def test_find_launcher_walks_up_to_mpirun(fake_mpirun, tmp_path):
    p, _ = fake_mpirun
    assert launcher.find_launcher(p.pid) == p.pid
    # a child of the launcher finds it; a process with none among its ancestors finds nothing
    child = subprocess.Popen(["sleep", "30"])
    try:
        assert launcher.find_launcher(child.pid) is None  # its parent is pytest, not a launcher
    finally:
        child.kill()
        child.wait()
    assert launcher.find_launcher(os.getpid()) is None


def test_guard_ends_a_launcher_that_outlives_an_abort(fake_mpirun, tmp_path, monkeypatch):
    monkeypatch.setattr(launcher, "_run_dir", None)  # (module state: restored after the test)
    monkeypatch.setattr(launcher, "_who", "a rank")
    p, err = fake_mpirun
    run = tmp_path / "run"
    run.mkdir()
    launcher.configure(str(run), "rank 0 (learner)", 3)
    launcher.mark_abort("timed out after 20s waiting for an unroll from actor rank 2; aborting the job")
    t0 = time.monotonic()
    assert launcher.guard(p.pid, launcher.marker_path(str(run)), grace_s=1.0, poll_s=0.1) == 1
    p.wait(timeout=10)
    assert p.returncode == -9 and time.monotonic() - t0 < 10
    line = err.read_text()
    assert line.count("\n") == 1, line
    assert "hpcmarl: the job aborted" in line and "rank 0 (learner) on" in line and "actor rank 2" in line, line


def test_guard_leaves_a_launcher_without_an_abort_alone(fake_mpirun, tmp_path):
    """No marker (or one older than the guard: an earlier incarnation's): the guard only waits for the launcher."""
    p, _ = fake_mpirun
    marker = tmp_path / launcher.MARKER
    marker.write_text("1.0\told\tline\n")
    os.utime(marker, (time.time() - 600, time.time() - 600))
    guard = subprocess.Popen([sys.executable, "-m", "hpcmarl.comm.launcher", str(p.pid), str(marker), "0.5"])
    time.sleep(2.0)
    assert p.poll() is None and guard.poll() is None  # still waiting, launcher alive
    p.kill()
    p.wait()
    assert guard.wait(timeout=10) == 0  # the launcher ended by itself: the guard too


def test_start_guard_removes_an_earlier_marker_and_needs_a_launcher(tmp_path):
    (tmp_path / launcher.MARKER).write_text("old\n")
    assert launcher.start_guard(str(tmp_path), 10.0) is None  # pytest has no mpirun above it
    assert not (tmp_path / launcher.MARKER).exists()
