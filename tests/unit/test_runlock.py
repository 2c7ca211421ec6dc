"""Run-directory guards without MPI: the lock (hpcmarl.runlock), what --fresh may move aside, run names that
would leave output.root, a full quota, and the non-finite check of the learner loop (hpcmarl.roles.finite)."""
import errno
import json
import os
import socket
import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from hpcmarl import runlock, storage
from hpcmarl.config import ConfigError, from_dict, load_config, load_dict
from hpcmarl.roles import finite

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = os.path.join(ROOT, "configs", "test_tiny.yaml")


@pytest.fixture(autouse=True)
def no_lock_left():
    yield
    runlock.release()


def write_lock(run_dir, age_s=0.0, **holder):
    """A lock file of another job (defaults: this host, a live pid that is not ours, refreshed ``age_s`` ago)."""
    os.makedirs(run_dir, exist_ok=True)
    now = time.time()
    info = dict(runlock.identity(), pid=os.getppid(), pid_start=None, token="other", started=now - 3600,
                refreshed=now - age_s, slurm_job_id="77")
    info.update(holder)
    path = os.path.join(run_dir, runlock.LOCK_NAME)
    with open(path, "w") as f:
        json.dump(info, f)
    os.utime(path, (now - age_s, now - age_s))
    return path


def dead_pid():
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


# --------------------------------------------------------------------------------------------------
# the lock
# --------------------------------------------------------------------------------------------------
def test_take_creates_the_lock_with_its_holder_and_release_removes_it(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    run = tmp_path / "root" / "run"  # neither exists yet
    warnings = []
    lock = runlock.take(str(run), 60.0, warnings.append)
    with open(run / ".lock") as f:
        info = json.load(f)
    assert info["host"] == socket.gethostname() and info["pid"] == os.getpid() and info["slurm_job_id"] == "4242"
    assert abs(info["started"] - time.time()) < 60 and info["refreshed"] >= info["started"]
    assert info["stale_after_s"] == 120.0 and warnings == []
    assert not lock.create()  # O_EXCL: a second create fails while the file exists
    runlock.release()
    assert not (run / ".lock").exists()
    assert not (tmp_path / "root").exists()  # made for the lock, empty again: removed (pre-flight errors leave nothing)


def test_a_second_job_is_refused_with_one_line_naming_the_holder(tmp_path):
    path = write_lock(str(tmp_path), age_s=5)
    before = open(path).read()
    with pytest.raises(runlock.LockHeld) as e:
        runlock.take(str(tmp_path), 60.0, print)
    msg = str(e.value)
    assert "\n" not in msg and f"run directory {tmp_path} is in use by another job" in msg
    for needle in (f"pid {os.getppid()} on host {socket.gethostname()}", "Slurm job 77", "running since",
                   "refreshed 5s ago", "wait for that job to end", "another run_dir"):
        assert needle in msg, (needle, msg)
    assert open(path).read() == before and runlock.held() is None


def test_a_requeued_slurm_job_takes_over_its_dead_incarnations_lock(tmp_path, monkeypatch):
    """A job requeued after its node died finds its own earlier incarnation's lock, on another host and freshly
    refreshed (Slurm declares a node down after SlurmdTimeout, well inside 2 x timeout_s): it is stale at once.
    The same incarnation, or an earlier restart count of another job, still holds."""
    write_lock(str(tmp_path), age_s=5, host="deadnode", slurm_job_id="4242", slurm_restart="0")
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "0")
    with pytest.raises(runlock.LockHeld):  # the same incarnation (a second step of one job): held
        runlock.take(str(tmp_path), 60.0, print)
    monkeypatch.setenv("SLURM_JOB_ID", "4243")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    with pytest.raises(runlock.LockHeld):  # another job: held
        runlock.take(str(tmp_path), 60.0, print)
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    warnings = []
    runlock.take(str(tmp_path), 60.0, warnings.append)
    assert len(warnings) == 1 and "earlier incarnation of this Slurm job (4242, restart 0" in warnings[0], warnings
    assert runlock.held() is not None


def test_a_lock_whose_process_is_gone_is_taken_over(tmp_path):
    write_lock(str(tmp_path), pid=dead_pid())
    warnings = []
    runlock.take(str(tmp_path), 60.0, warnings.append)
    assert len(warnings) == 1 and "took over the stale lock" in warnings[0] and "its process is gone" in warnings[0]
    with open(tmp_path / ".lock") as f:
        assert json.load(f)["pid"] == os.getpid()
    assert sorted(os.listdir(tmp_path)) == [".lock"]  # the stale file is gone, not kept aside


def test_a_live_pid_not_refreshed_for_twice_the_timeout_is_stale(tmp_path):
    write_lock(str(tmp_path), age_s=50)  # live pid, 50 s > 2 x 20 s
    warnings = []
    runlock.take(str(tmp_path), 20.0, warnings.append)
    assert len(warnings) == 1 and "not refreshed for 50s" in warnings[0], warnings
    runlock.release()
    write_lock(str(tmp_path), age_s=30)  # 30 s < 2 x 20 s: still held
    with pytest.raises(runlock.LockHeld):
        runlock.take(str(tmp_path), 20.0, print)


def test_the_holders_own_stale_time_counts_when_it_is_longer(tmp_path):
    write_lock(str(tmp_path), age_s=50, stale_after_s=600.0)  # its refreshes are 150 s apart
    with pytest.raises(runlock.LockHeld, match="not refreshed for 600s"):
        runlock.take(str(tmp_path), 20.0, print)


def test_a_reused_pid_or_another_host_is_judged_by_its_refresh_time(tmp_path):
    write_lock(str(tmp_path), pid=os.getpid(), pid_start=1)  # our pid, but a process that started at tick 1
    warnings = []
    runlock.take(str(tmp_path), 60.0, warnings.append)
    assert "its process is gone" in warnings[0]
    runlock.release()
    write_lock(str(tmp_path), host="some-other-node", pid=dead_pid())  # a pid of another host says nothing here
    with pytest.raises(runlock.LockHeld, match="on host some-other-node"):
        runlock.take(str(tmp_path), 60.0, print)
    write_lock(str(tmp_path), age_s=500, host="some-other-node")
    warnings = []
    runlock.take(str(tmp_path), 60.0, warnings.append)
    assert "not refreshed" in warnings[0]


def test_an_empty_lock_file_is_held_while_new_and_stale_when_old(tmp_path):
    path = tmp_path / ".lock"
    path.write_text("")  # a job between its O_EXCL create and its write, or a damaged file
    with pytest.raises(runlock.LockHeld, match="unknown job"):
        runlock.take(str(tmp_path), 60.0, print)
    os.utime(path, (time.time() - 1000, time.time() - 1000))
    warnings = []
    runlock.take(str(tmp_path), 60.0, warnings.append)
    assert "not refreshed" in warnings[0]


def test_the_refresher_updates_the_time_and_never_overwrites_another_jobs_lock(tmp_path):
    warnings = []
    lock = runlock.take(str(tmp_path), 0.2, warnings.append)  # refreshes every 0.05 s
    first = json.loads((tmp_path / ".lock").read_text())["refreshed"]
    deadline = time.monotonic() + 10
    while json.loads((tmp_path / ".lock").read_text())["refreshed"] == first and time.monotonic() < deadline:
        time.sleep(0.02)
    assert json.loads((tmp_path / ".lock").read_text())["refreshed"] > first
    other = write_lock(str(tmp_path), token="someone-else")  # taken over by another job (we looked stale)
    while not lock.lost and time.monotonic() < deadline:
        time.sleep(0.02)
    assert lock.lost and len(warnings) == 1 and "no longer this job's" in warnings[0]
    runlock.release()
    assert json.load(open(other))["token"] == "someone-else"  # release removes only our own lock


def test_a_new_run_in_the_same_process_gives_up_the_earlier_lock(tmp_path):
    runlock.take(str(tmp_path / "a"), 60.0, print)
    runlock.take(str(tmp_path / "b"), 60.0, print)
    assert not (tmp_path / "a" / ".lock").exists() and runlock.held().run_dir == str(tmp_path / "b")


def test_a_run_dir_that_is_a_file_is_left_to_preflight(tmp_path):
    (tmp_path / "f").write_text("x")
    assert runlock.take(str(tmp_path / "f"), 60.0, print) is None


# --------------------------------------------------------------------------------------------------
# --fresh
# --------------------------------------------------------------------------------------------------
def test_fresh_moves_aside_only_an_hpcmarl_run(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    assert runlock.fresh_aside(str(d)) is False  # empty
    (d / ".lock").write_text("{}")
    assert runlock.fresh_aside(str(d)) is False  # nothing but the lock
    (d / "config.yaml").write_text("name: x\n")
    with pytest.raises(runlock.NotARun, match="config.yaml"):  # a config.yaml alone is anybody's
        runlock.fresh_aside(str(d))
    (d / "checkpoints").mkdir()
    assert runlock.fresh_aside(str(d)) is True
    home = tmp_path / "home"
    home.mkdir()
    for name in ("notes.txt", "a", "b", "c"):
        (home / name).write_text("")
    with pytest.raises(runlock.NotARun) as e:
        runlock.fresh_aside(str(home))
    assert "\n" not in str(e.value) and "a, b, c and 1 more" in str(e.value) and "left as it is" in str(e.value)
    (home / "run.h5").write_text("")
    assert runlock.fresh_aside(str(home)) is True


def test_moving_the_locked_run_aside_locks_the_new_directory(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.h5").write_text("")
    lock = runlock.take(str(run), 60.0, print)
    aside = str(tmp_path / "run.old")
    os.rename(run, aside)
    runlock.moved(aside)
    assert lock.ours() and os.listdir(run) == [".lock"] and os.listdir(aside) == ["run.h5"]


# --------------------------------------------------------------------------------------------------
# run names
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", [".", "..", "a/b", "../x", "a\\b", "a\0b", "-rf", ""])
def test_a_name_that_is_not_a_plain_directory_name_is_refused(name):
    data = load_dict(TINY)
    data["name"] = name
    with pytest.raises(ConfigError) as e:
        from_dict(data)
    assert str(e.value).startswith("config key 'name':") and "\n" not in str(e.value)


def test_plain_names_and_explicit_run_dirs_stay_allowed(tmp_path):
    for name in ("tiny", "..x", "a..b", "run-1"):
        cfg = load_config(TINY, [f"name={name}", f"output.root={tmp_path}"])
        assert os.path.dirname(cfg.resolved_run_dir) == str(tmp_path)
    assert load_config(TINY, ["run_dir=../elsewhere"]).resolved_run_dir == "../elsewhere"  # the person's choice


# --------------------------------------------------------------------------------------------------
# a full quota
# --------------------------------------------------------------------------------------------------
def test_edquot_is_a_full_disk_and_its_line_says_quota(tmp_path):
    from hpcmarl.launch import disk_full_line

    quota = OSError(errno.EDQUOT, "Disk quota exceeded", str(tmp_path / "checkpoints" / "ckpt-000000002.h5.tmp1"))
    assert storage.disk_full(quota) and storage.quota_exceeded(quota)
    try:  # as HDF5 reports it: the errno inside the message of another exception
        try:
            raise RuntimeError("Can't write data (file write failed: errno = 122, error message = 'Disk quota "
                               "exceeded')")
        except RuntimeError as e:
            raise OSError("flush failed") from e
    except OSError as e:
        assert storage.disk_full(e) and storage.quota_exceeded(e)
    full = OSError(errno.ENOSPC, "No space left on device")
    assert storage.disk_full(full) and not storage.quota_exceeded(full)
    (tmp_path / "checkpoints").mkdir()
    storage.save_checkpoint(str(tmp_path / "checkpoints"), 1, {"w": np.ones(3)}, {}, keep=3, reserve_mb=0)
    line = disk_full_line(quota, str(tmp_path))
    assert "\n" not in line and line.startswith(f"disk quota exceeded on the file system of {tmp_path}")
    assert "no space left" not in line and "within the quota" in line and "ckpt-000000001.h5" in line
    assert "run the same command again to resume" in line
    assert disk_full_line(full, str(tmp_path)).startswith("no space left on the file system")


# --------------------------------------------------------------------------------------------------
# non-finite losses and parameters
# --------------------------------------------------------------------------------------------------
class FakeLearner:
    def __init__(self):
        self.w = torch.nn.Parameter(torch.zeros(4, 3))
        self.b = torch.nn.Parameter(torch.zeros(3))
        self.params = [self.w, self.b]

    def state_arrays(self):
        return {"model/net.0.weight": self.w.detach().numpy().copy(),
                "model/net.0.bias": self.b.detach().numpy().copy(), "rng/x": np.zeros(4, np.uint8)}


class FakeFlow:
    def __init__(self):
        self.learner = FakeLearner()
        self.ctrl = SimpleNamespace(size=1)
        self.calls = []

    def shutdown(self, preempted):
        self.calls.append(("shutdown", preempted))
        return 0

    def close(self):
        self.calls.append("close")

    def save(self, log):  # must never be reached
        self.calls.append("save")


def fake_run(tmp_path, update):
    (tmp_path / "checkpoints").mkdir(exist_ok=True)
    ctx = SimpleNamespace(rank=0, run_dir=str(tmp_path), layout=SimpleNamespace(league=False), world=None,
                          cfg=SimpleNamespace(runtime=SimpleNamespace(timeout_s=5.0)))
    writer = SimpleNamespace(closed=False)
    writer.close = lambda: setattr(writer, "closed", True)
    loggers = SimpleNamespace(closed=[])
    loggers.close = lambda failed: loggers.closed.append(failed)  # the live loggers (output.loggers)
    log = SimpleNamespace(counters={"update": update}, lead=True, writer=writer, loggers=loggers)
    return ctx, FakeFlow(), log


def test_row_problem_watches_losses_and_the_gradient_norm():
    assert finite.row_problem({"agent/policy_loss": 0.5, "grad_norm": 1.0, "return/agent": float("nan")}) == ""
    assert finite.row_problem({"agent/policy_loss": float("nan"), "loss": 1.0, "grad_norm": float("inf"),
                               "approx_kl": float("nan")}) == "agent/policy_loss = nan, grad_norm = inf"


def test_finite_rounds_pass_untouched(tmp_path, monkeypatch):
    monkeypatch.delenv("HPCMARL_INJECT_FAULT", raising=False)
    ctx, flow, log = fake_run(tmp_path, 3)
    finite.check_finite(ctx, flow, log, {"agent/value_loss": 0.1, "return/agent": float("nan")})
    assert flow.calls == [] and not log.writer.closed


@pytest.mark.parametrize("what", ["loss", "parameter"])
def test_a_non_finite_value_stops_with_one_line_and_no_checkpoint(tmp_path, monkeypatch, capsys, what):
    monkeypatch.setattr("hpcmarl.comm.protocol.barrier", lambda comm, timeout, what: None)
    ctx, flow, log = fake_run(tmp_path, 12)
    storage.save_checkpoint(str(tmp_path / "checkpoints"), 10, {"w": np.ones(3)}, {}, keep=3, reserve_mb=0)
    row = {"agent/policy_loss": 0.3}
    if what == "loss":
        row["agent/policy_loss"] = float("nan")
    else:
        finite.poison(flow)  # what the learner loop does on HPCMARL_INJECT_FAULT=0:nan:12
    with pytest.raises(SystemExit) as e:
        finite.check_finite(ctx, flow, log, row)
    assert e.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("hpcmarl: error: non-finite value at update 12: "), err
    if what == "loss":
        assert "agent/policy_loss = nan" in err[0]
    else:
        assert "parameter model/net.0.weight has 1 non-finite value (of 12)" in err[0]
    assert "ckpt-000000010.h5" in err[0]
    assert flow.calls == [("shutdown", False), "close"] and log.writer.closed  # stopped cleanly, nothing saved
    assert log.loggers.closed == [True]  # W&B exit code 1, MLflow FAILED


def test_the_nan_knob_poisons_one_parameter(tmp_path):
    ctx, flow, log = fake_run(tmp_path, 12)
    assert finite.params_finite(flow.learner.params)
    finite.poison(flow)
    assert not finite.params_finite(flow.learner.params)
    theta = np.zeros(5, np.float32)  # a flow whose shell owns the update (gradients: NIGT's flat vector)
    finite.poison(SimpleNamespace(learner=None, trained_params=lambda: [theta]))
    assert np.isnan(theta[0]) and not finite.params_finite([theta])
