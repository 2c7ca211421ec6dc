"""End-to-end runs as subprocesses: outputs, resume, serial mode, failure injection, bad input."""
import glob
import hashlib
import json
import os
import time

import h5py
import numpy as np
import pytest

from launch import hpcmarl, mpirun, requires_mpirun

pytestmark = [requires_mpirun, pytest.mark.mpi]

# max_cycles == unroll_length: every unroll ends exactly one episode per env copy, so row counts are exact
E, T = 2, 5
TINY = [f"env.num_envs={E}", f"algo.unroll_length={T}", f"env.kwargs.max_cycles={T}", "algo.epochs=2",
        "algo.hidden=16", "output.progress_s=1", "runtime.timeout_s=60"]


def inspect_json(run):
    p = hpcmarl(["inspect", str(run), "--json"])
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def tree_digest(root):
    out = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = (hashlib.sha1(f.read()).hexdigest(), os.stat(path).st_mtime_ns)
    return out


def test_four_ranks_produce_outputs_and_resume_continues(tmp_path):
    run = tmp_path / "run"
    args = ["train", "configs/test_tiny.yaml", f"run_dir={run}", "topology.learners=2",
            "output.checkpoint_every=2"] + TINY
    p = mpirun(4, args + ["train.max_updates=4"])
    assert p.returncode == 0, p.stderr[-3000:]
    assert "[hpcmarl] upd" in p.stdout and "run directory" in p.stdout and "finished" in p.stdout
    s = inspect_json(run)
    assert s["schema_version"] == 1
    assert s["updates"] == 4
    assert s["env_steps"] == 4 * 2 * E * T
    assert s["episodes"] == 4 * 2 * E
    assert len(s["checkpoints"]) >= 1
    assert len(s["trajectory_files"]) == 2 and all(n == 4 * E for n in s["trajectory_files"].values())
    g = s["groups"]["agent"]
    assert g["episodes"] == 4 * 2 * E and g["return_last"] is not None
    with h5py.File(run / "run.h5", "r") as f:
        for key in ("config", "git_sha", "versions", "mpi_library", "rank_map", "slurm", "start_time"):
            assert key in f.attrs, key
        rank_map = json.loads(f.attrs["rank_map"])
        assert [r["role"] for r in rank_map] == ["learner", "learner", "actor", "actor"]
        assert f["metrics/update"].shape[0] == 4

    # resume: same run directory, higher budget -> counters continue, rows neither lost nor duplicated
    p = mpirun(4, args + ["train.max_updates=7"])
    assert p.returncode == 0, p.stderr[-3000:]
    assert "resumed from ckpt-000000004.h5" in p.stdout
    s = inspect_json(run)
    assert s["updates"] == 7 and s["env_steps"] == 7 * 2 * E * T and s["episodes"] == 7 * 2 * E
    with h5py.File(run / "run.h5", "r") as f:
        np.testing.assert_array_equal(f["metrics/update"][()], np.arange(1, 8))
        upd = f["episodes/update"][()]
        assert sorted(np.unique(upd, return_counts=True)[1].tolist()) == [2 * E] * 7
    for path in s["trajectory_files"]:
        with h5py.File(path, "r") as f:  # appended, not overwritten
            assert f["episodes/episode"].shape[0] == 7 * E
            np.testing.assert_array_equal(f["episodes/episode"][()], np.arange(7 * E))


def test_serial_mode_one_process(tmp_path):
    run = tmp_path / "serial"
    p = hpcmarl(["train", "configs/test_tiny.yaml", f"run_dir={run}", "train.max_updates=3"] + TINY)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "serial" in p.stdout
    s = inspect_json(run)
    assert s["updates"] == 3 and s["episodes"] == 3 * E
    assert list(s["trajectory_files"].values()) == [3 * E]


@pytest.mark.parametrize("rank", [1, 3])  # a learner, an actor
def test_exception_on_one_rank_ends_job_fast(tmp_path, rank):
    t0 = time.monotonic()
    p = mpirun(4, ["train", "configs/test_tiny.yaml", f"run_dir={tmp_path / 'r'}", "topology.learners=2",
                   "train.max_updates=50"] + TINY, env={"HPCMARL_INJECT_FAULT": f"{rank}:raise:3"}, timeout=60)
    elapsed = time.monotonic() - t0
    assert p.returncode != 0
    assert f"rank {rank} on" in p.stderr and "injected fault" in p.stderr and "Traceback" in p.stderr
    assert elapsed < 30 + 15, elapsed  # 15 s allowance for interpreter + Horovod start-up under load


def test_hung_rank_is_detected_by_timeout(tmp_path):
    p = mpirun(2, ["train", "configs/test_tiny.yaml", f"run_dir={tmp_path / 'r'}", "train.max_updates=50"]
               + TINY + ["runtime.timeout_s=5"], env={"HPCMARL_INJECT_FAULT": "1:hang:2"}, timeout=90)
    assert p.returncode != 0
    assert "timed out after 5s" in p.stderr


def test_bad_input_one_line_errors_and_untouched_run_dir(tmp_path):
    run = tmp_path / "run"
    p = hpcmarl(["train", "configs/test_tiny.yaml", f"run_dir={run}", "train.max_updates=2",
                 "output.checkpoint_every=1"] + TINY)
    assert p.returncode == 0, p.stderr[-3000:]
    before = tree_digest(run)
    cases = [
        (["algo.bogus=1"], "algo.bogus"),
        (["env.name=no_such_env"], "no_such_env"),
        (["env.kwargs.bogus=1"], "unexpected keyword argument 'bogus'"),  # found by building the env once
    ]
    for extra, needle in cases:
        p = mpirun(2, ["train", "configs/test_tiny.yaml", f"run_dir={run}"] + TINY + extra, timeout=60)
        assert p.returncode == 2, (extra, p.stderr)
        lines = [l for l in p.stderr.splitlines() if l.startswith("hpcmarl: error")]
        assert len(lines) == 1 and needle in lines[0], p.stderr
    p = mpirun(2, ["train", "configs/test_tiny.yaml", f"run_dir={run}", "topology.learners=2"] + TINY, timeout=60)
    assert p.returncode == 2 and "topology.learners=2" in p.stderr, p.stderr
    # a malformed fault-injection spec (a test's typo) is refused in one line, not ignored
    p = mpirun(2, ["train", "configs/test_tiny.yaml", f"run_dir={run}"] + TINY, timeout=60,
               env={"HPCMARL_INJECT_FAULT": "1:explode:2"})
    err = [l for l in p.stderr.splitlines() if l.startswith("hpcmarl: error")]
    assert p.returncode == 2 and len(err) == 1 and "HPCMARL_INJECT_FAULT" in err[0], p.stderr
    # an algorithm the env does not suit, found by building the learner once before anything is written
    p = hpcmarl(["train", "configs/qmix_spread.yaml", f"run_dir={run}", "env.kwargs.continuous_actions=true"])
    err = [l for l in p.stderr.splitlines() if l.startswith("hpcmarl: error")]
    assert p.returncode == 2 and len(err) == 1 and "needs discrete actions" in err[0], p.stderr
    assert tree_digest(run) == before

    # every checkpoint truncated -> one-line error naming the file, exit 2, nothing changed
    for path in glob.glob(str(run / "checkpoints" / "*.h5")):
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)
    before = tree_digest(run)
    p = hpcmarl(["train", "configs/test_tiny.yaml", f"run_dir={run}", "train.max_updates=4"] + TINY)
    assert p.returncode == 2
    err = [l for l in p.stderr.splitlines() if l.startswith("hpcmarl: error")]
    assert len(err) == 1 and "ckpt-000000002.h5" in err[0] and "--fresh" in err[0], p.stderr
    assert tree_digest(run) == before


def test_resume_with_changed_settings(tmp_path):
    """A checkpoint whose model does not fit the config: one line naming the changed keys, exit 2, nothing written;
    a change that fits (the learning rate) resumes with a warning that names it."""
    run = tmp_path / "run"
    args = ["train", "configs/test_tiny.yaml", f"run_dir={run}"] + TINY
    p = hpcmarl(args + ["train.max_updates=2", "output.checkpoint_every=1"])
    assert p.returncode == 0, p.stderr[-3000:]
    before = tree_digest(run)
    for extra, needles in ((["algo.hidden=32"], ["algo.hidden: 16 -> 32", "(16,", "--fresh"]),
                           (["algo.name=ippo"], ["for algo 'mappo'", "'ippo'"])):
        p = hpcmarl(args + ["train.max_updates=3"] + extra)
        assert p.returncode == 2, (extra, p.stderr[-3000:])
        err = [l for l in p.stderr.splitlines() if l.startswith("hpcmarl: error")]
        assert len(err) == 1 and all(n in err[0] for n in needles), p.stderr
        assert "Traceback" not in p.stderr
        assert tree_digest(run) == before
    p = hpcmarl(args + ["train.max_updates=3", "algo.lr=1e-4"])
    assert p.returncode == 0, p.stderr[-3000:]
    warn = [l for l in p.stderr.splitlines() if "settings changed since the checkpoint" in l]
    assert len(warn) == 1 and "algo.lr: 0.0005 -> 0.0001" in warn[0], p.stderr
    assert "resumed from ckpt-000000002.h5" in p.stdout and inspect_json(run)["updates"] == 3


def test_damaged_newest_checkpoint_falls_back_to_previous(tmp_path):
    run = tmp_path / "run"
    args = ["train", "configs/test_tiny.yaml", f"run_dir={run}", "output.checkpoint_every=1"] + TINY
    p = hpcmarl(args + ["train.max_updates=3"])
    assert p.returncode == 0, p.stderr[-3000:]
    newest = sorted(glob.glob(str(run / "checkpoints" / "*.h5")))[-1]
    assert newest.endswith("ckpt-000000003.h5")
    with open(newest, "r+b") as f:
        f.truncate(100)
    p = hpcmarl(args + ["train.max_updates=5"])
    assert p.returncode == 0, p.stderr[-3000:]
    assert "ckpt-000000003.h5" in p.stderr and "damaged" in p.stderr
    assert "resumed from ckpt-000000002.h5" in p.stdout
    s = inspect_json(run)
    assert s["updates"] == 5 and s["episodes"] == 5 * E


def test_two_policy_groups_simple_tag(tmp_path):
    run = tmp_path / "tag"
    p = mpirun(3, ["train", "configs/test_tiny.yaml", f"run_dir={run}", "env.name=simple_tag_v3",
                   "algo.name=ippo", "train.max_updates=3"] + TINY)
    assert p.returncode == 0, p.stderr[-3000:]
    s = inspect_json(run)
    assert set(s["groups"]) == {"adversary", "agent"}
    with h5py.File(run / "run.h5", "r") as f:
        assert "return/adversary" in f["episodes"] and "return/agent" in f["episodes"]
    with h5py.File(next(iter(s["trajectory_files"])), "r") as f:
        assert f["steps/adversary/obs"].shape[1:] == (3, 16) and f["steps/agent/obs"].shape[1:] == (1, 14)


def test_signal_makes_a_final_checkpoint_and_clean_exit(tmp_path):
    """SIGUSR1 to mpirun (forwarded to every rank): stop at the next update, checkpoint, close files."""
    import signal
    import subprocess
    import sys

    from launch import ROOT, mpi_env

    run = tmp_path / "sig"
    cmd = ["mpirun", "-n", "3", "--bind-to", "none", sys.executable, "-m", "hpcmarl.cli", "train",
           "configs/test_tiny.yaml", f"run_dir={run}", "train.max_updates=100000", "train.total_env_steps=100000000",
           "output.checkpoint_every=100000",
           "topology.learners=1"] + TINY
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=mpi_env(), cwd=ROOT,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if "[hpcmarl] upd" in line:
                break
        time.sleep(1.0)
        proc.send_signal(signal.SIGUSR1)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 75, err[-3000:]  # EX_TEMPFAIL: stopped early, resumable
    assert "stop signal received" in out
    s = inspect_json(run)
    assert len(s["checkpoints"]) == 1 and s["checkpoints"][0].endswith(f"ckpt-{s['updates']:09d}.h5")
    with h5py.File(run / "run.h5", "r") as f:  # closed cleanly: a plain (non-SWMR) open works
        assert f["metrics/update"].shape[0] == s["updates"]
