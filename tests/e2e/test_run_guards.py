"""Guards of a run directory, end to end: one job at a time (RUN/.lock), a stale lock taken over, --fresh only on a
run, run names that would leave output.root, a full quota, and a non-finite parameter stopping the run before its
checkpoint."""
import glob
import json
import os
import signal
import socket
import subprocess
import sys
import time

import h5py
import pytest

from hpcmarl import runlock, storage

from launch import HPCMARL, ROOT, hpcmarl, mpi_env, mpirun, requires_mpirun

pytestmark = [requires_mpirun]

TINY = ["configs/test_tiny.yaml", "algo.epochs=1", "output.progress_s=1", "runtime.timeout_s=60"]


def error_lines(p, prefix="hpcmarl: error"):
    return [ln for ln in p.stderr.splitlines() if ln.startswith(prefix)]


def dead_pid():
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_a_second_job_on_a_running_run_dir_is_refused(tmp_path):
    run = tmp_path / "run"
    log = open(tmp_path / "first.err", "w")
    first = subprocess.Popen(HPCMARL + ["train"] + TINY + [f"run_dir={run}", "train.max_updates=1000000",
                                                           "train.total_env_steps=1000000000"],
                             stdout=subprocess.DEVNULL, stderr=log, env=mpi_env(), cwd=ROOT, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while not (run / ".lock").exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert (run / ".lock").exists(), (tmp_path / "first.err").read_text()[-3000:]
        holder = json.loads((run / ".lock").read_text())
        assert holder["pid"] == first.pid and holder["host"] == socket.gethostname()
        p = mpirun(2, ["train"] + TINY + [f"run_dir={run}", "train.max_updates=2"], timeout=120)
        assert p.returncode == 2, p.stderr[-3000:]
        err = error_lines(p)
        assert len(err) == 1 and "Traceback" not in p.stderr, p.stderr
        for needle in (f"run directory {run} is in use by another job", f"pid {first.pid} on host {holder['host']}",
                       "running since", "wait for that job to end"):
            assert needle in err[0], (needle, err[0])
        p = hpcmarl(["train"] + TINY + [f"run_dir={run}", "train.max_updates=2", "--fresh"])  # nor moved aside
        assert p.returncode == 2 and "in use by another job" in p.stderr and not glob.glob(f"{run}.old-*"), p.stderr
        assert first.poll() is None and json.loads((run / ".lock").read_text())["token"] == holder["token"]
        first.send_signal(signal.SIGTERM)  # a stop by a signal removes the lock
        assert first.wait(timeout=60) == 75
        assert not (run / ".lock").exists()
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()
        log.close()


def test_a_lock_left_by_a_dead_job_is_taken_over(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    now = time.time()
    (run / ".lock").write_text(json.dumps(dict(runlock.identity(), pid=dead_pid(), pid_start=None, token="crashed",
                                               started=now - 600, refreshed=now - 1)))
    p = hpcmarl(["train"] + TINY + [f"run_dir={run}", "train.max_updates=2"])
    assert p.returncode == 0, p.stderr[-3000:]
    warn = [ln for ln in p.stderr.splitlines() if "stale lock" in ln]
    assert len(warn) == 1 and warn[0].startswith("hpcmarl: warning: took over the stale lock") \
        and "its process is gone" in warn[0], p.stderr
    assert not (run / ".lock").exists() and (run / "run.h5").exists()


def test_fresh_moves_aside_a_run_but_refuses_any_other_directory(tmp_path):
    home = tmp_path / "home"
    (home / "project").mkdir(parents=True)
    (home / "notes.txt").write_text("mine")
    p = hpcmarl(["train"] + TINY + [f"run_dir={home}", "train.max_updates=2", "--fresh"])
    assert p.returncode == 2, p.stderr[-3000:]
    err = error_lines(p)
    assert len(err) == 1 and "--fresh moves aside only an hpcmarl run" in err[0] and "notes.txt" in err[0], p.stderr
    assert sorted(os.listdir(home)) == ["notes.txt", "project"] and os.listdir(tmp_path) == ["home"]
    run = tmp_path / "run"
    for _ in range(2):  # the second --fresh moves the first run aside
        p = hpcmarl(["train"] + TINY + [f"run_dir={run}", "train.max_updates=2", "--fresh"])
        assert p.returncode == 0, p.stderr[-3000:]
    aside = glob.glob(f"{run}.old-*")
    assert len(aside) == 1 and "moved the previous run to" in p.stderr
    assert sorted(os.listdir(aside[0])) == ["checkpoints", "config.yaml", "run.h5", "trajectories"]  # no lock
    assert ".lock" not in os.listdir(run)


@pytest.mark.parametrize("name", ["..", ".", "../escape", "a\\b"])
def test_a_name_that_leaves_output_root_is_refused(tmp_path, name):
    root = tmp_path / "root"
    p = hpcmarl(["train"] + TINY + [f"name={name}", f"output.root={root}", "train.max_updates=2"])
    assert p.returncode == 2, p.stderr[-3000:]
    err = error_lines(p)
    assert len(err) == 1 and err[0].startswith("hpcmarl: error: config key 'name':"), p.stderr
    assert os.listdir(tmp_path) == []


@pytest.mark.mpi
def test_a_full_quota_is_handled_like_a_full_disk(tmp_path):
    """EDQUOT from a checkpoint write (tests/e2e/quota_plugin.py): one line saying so, the newest complete checkpoint
    kept, no traceback, the lock removed; as tests/e2e/test_disk_full.py does for ENOSPC."""
    run = tmp_path / "run"
    p = mpirun(2, ["train"] + TINY + [f"run_dir={run}", "plugins=[tests.e2e.quota_plugin]", "train.max_updates=20",
                                      "output.checkpoint_every=2"], env={"HPCMARL_TEST_EDQUOT_AT": "4"}, timeout=120)
    assert p.returncode != 0
    lines = [ln for ln in p.stderr.splitlines() if ln.startswith("hpcmarl: rank")]
    assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr[-3000:]
    assert "disk quota exceeded on the file system of" in lines[0] and str(run) in lines[0], lines
    assert "no space left" not in lines[0] and "within the quota" in lines[0], lines
    ckpts = storage.list_checkpoints(str(run / "checkpoints"))
    assert [os.path.basename(c) for c in ckpts] == ["ckpt-000000002.h5"], ckpts
    assert f"the newest complete checkpoint is {ckpts[-1]}" in lines[0]
    assert not (run / ".lock").exists()


@pytest.mark.mpi
def test_a_nan_parameter_stops_the_run_before_its_checkpoint(tmp_path):
    """2 learners + 2 actors; learner rank 1's parameter becomes NaN after update 3: every learner stops there with
    one line naming the update and the tensor, exit 1, checkpoints 1 and 2 only, run.h5 closed cleanly."""
    run = tmp_path / "run"
    p = mpirun(4, ["train"] + TINY + [f"run_dir={run}", "topology.learners=2", "train.max_updates=8",
                                      "output.checkpoint_every=1"], env={"HPCMARL_INJECT_FAULT": "1:nan:3"},
               timeout=120)
    assert p.returncode == 1, p.stderr[-3000:]
    err = error_lines(p)
    assert len(err) == 1 and "Traceback" not in p.stderr and "MPI_ABORT" not in p.stderr, p.stderr[-3000:]
    assert err[0].startswith("hpcmarl: error: non-finite value at update 3: learner rank 1: parameter model/"), err
    assert "has 1 non-finite value" in err[0] and "ckpt-000000002.h5" in err[0], err
    ckpts = storage.list_checkpoints(str(run / "checkpoints"))
    assert [os.path.basename(c) for c in ckpts] == ["ckpt-000000001.h5", "ckpt-000000002.h5"], ckpts
    with h5py.File(run / "run.h5", "r") as f:  # closed cleanly: a plain (non-SWMR) open works
        assert f["metrics/update"][()].tolist() == [1.0, 2.0]
    assert not (run / ".lock").exists()
