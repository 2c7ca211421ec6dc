"""Hard kills and the resume after them: run.h5 holds every update and episode the checkpoint counts, exactly once;
trajectory files are rolled back to the checkpoint (no episode twice, policy versions never going backwards);
temporary files of interrupted writes are removed; the resume's hello fits any number of env copies.

Runs are deterministic per seed and every unroll ends its episodes here (``unroll_length == max_cycles``), so a
killed-and-resumed run is compared with the same run uninterrupted (as in test_exact_resume.py)."""
import glob
import os
import signal
import subprocess
import time

import numpy as np
import pytest

from launch import COUNTING, HPCMARL, ROOT, mpi_env, mpirun, requires_mpirun

pytestmark = [requires_mpirun, pytest.mark.mpi]

N = 10  # updates of the finished runs
ARGS = ["configs/test_tiny.yaml", "env.kwargs.max_cycles=5", "algo.unroll_length=5", "output.checkpoint_every=1",
        "train.total_env_steps=100000000", "output.progress_s=1"]
# (settings of the killed session, HPCMARL_INJECT_FAULT); both leave the checkpoint of update 7 as the newest
CASES = {
    # the lead learner dies (os._exit) as update 8 starts; run.h5 was never flushed by the clock (flush_s=600)
    "learner_exits": (["output.flush_s=600", "runtime.timeout_s=60"], "0:exit:7"),
    # the lead learner hangs in update 8 while its actor makes the unroll of update 8 and writes (and flushes:
    # flush_s=0.001) its episodes to its trajectory file; the actor's timeout ends the job, the learner is killed
    "learner_hangs": (["output.flush_s=0.001", "runtime.timeout_s=5"], "0:hang:7"),
}


def session(sid):
    """Processes (zombies included) of the session ``sid``: an MPI job's ranks are in mpirun's."""
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        if int(stat[stat.rindex(")") + 2:].split()[3]) == sid:
            out.append(int(pid))
    return out


def mpirun_killed(n, args, env, timeout=240):
    """``launch.mpirun`` for a job that dies, then (bounded) until its last process has exited: the ranks of an
    aborted job exit a moment after mpirun does, and the run directory stays theirs (its lock) till then."""
    p = subprocess.Popen(["mpirun", "-n", str(n), "--bind-to", "none"] + HPCMARL + list(args), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=mpi_env(env), cwd=ROOT, start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        pytest.fail(f"command timed out after {timeout}s (a hang)\nstdout:\n{out[-3000:]}\nstderr:\n{err[-3000:]}")
    deadline = time.monotonic() + 60
    while session(p.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


def checkpoints(run):
    return sorted(glob.glob(os.path.join(run, "checkpoints", "ckpt-*.h5")))


def run_tables(run):
    from hpcmarl.storage import Run

    r = Run(run)
    return r.metrics(), r.episodes()


def trajectories(run):
    from hpcmarl.storage import KIND_TRAJ, open_read, read_table

    with open_read(os.path.join(run, "trajectories", "actor-00000.h5"), KIND_TRAJ) as f:
        return read_table(f["steps"]), read_table(f["episodes"])


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The same run, never interrupted."""
    run = str(tmp_path_factory.mktemp("straight") / "run")
    p = mpirun(2, ["train"] + ARGS + [f"train.max_updates={N}", f"run_dir={run}"], timeout=240)
    assert p.returncode == 0, p.stderr[-3000:]
    return run


@pytest.mark.parametrize("case", list(CASES))
def test_a_killed_run_resumes_with_nothing_lost_or_duplicated(tmp_path, straight, case):
    from hpcmarl.storage import load_checkpoint

    extra, fault = CASES[case]
    run = str(tmp_path / "run")
    p = mpirun_killed(2, ["train"] + ARGS + extra + ["train.max_updates=50", f"run_dir={run}"],
                      env={"HPCMARL_INJECT_FAULT": fault})
    assert p.returncode not in (0, 75), p.stdout[-3000:]
    assert os.path.basename(checkpoints(run)[-1]) == "ckpt-000000007.h5"
    # a SIGKILL while a checkpoint (and the config) was being written leaves their temporary files
    stale = [os.path.join(run, "checkpoints", "ckpt-000000008.h5.tmp4242"), os.path.join(run, "config.yaml.tmp")]
    for path in stale:
        with open(path, "wb") as f:
            f.write(b"half a file")

    p = mpirun(2, ["train"] + ARGS + [f"train.max_updates={N}", f"run_dir={run}"], timeout=240)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "resumed from ckpt-000000007.h5" in p.stdout
    assert not any(os.path.exists(s) for s in stale) and "removed 2 temporary file(s)" in p.stderr, p.stderr[-2000:]
    assert "fewer rows" not in p.stderr, p.stderr[-2000:]

    # run.h5: every update once, every episode the checkpoints count once, the same rows as the straight run
    m, eps = run_tables(run)
    m0, eps0 = run_tables(straight)
    np.testing.assert_array_equal(m["update"], np.arange(1, N + 1))
    _, attrs = load_checkpoint(checkpoints(run)[-1])
    assert int(attrs["update"]) == N and len(eps["update"]) == int(attrs["episodes"]) == len(eps0["update"]) > 0
    assert np.all(np.diff(eps["update"]) >= 0)
    for k in eps0:
        if k != "wall_time":
            np.testing.assert_array_equal(eps[k], eps0[k], err_msg=k)
    for k in ("env_steps", "episodes", "loss/policy"):
        if k in m0:
            np.testing.assert_array_equal(m[k], m0[k], err_msg=k)

    # the trajectory file: episode numbers 0, 1, ... once each, versions and updates never going backwards, every
    # row one of the straight run's rows, nothing of the resumed updates 8..10 missing or twice
    steps, teps = trajectories(run)
    steps0, teps0 = trajectories(straight)
    if case == "learner_hangs":  # the actor had flushed every episode: the file is the straight run's
        assert sorted(teps) == sorted(teps0) and len(teps["episode"]) == len(teps0["episode"])
        for k in teps0:
            np.testing.assert_array_equal(teps[k], teps0[k], err_msg=k)
        for k in steps0:
            np.testing.assert_array_equal(steps[k], steps0[k], err_msg=k)
    n = len(teps["episode"])
    np.testing.assert_array_equal(teps["episode"], np.arange(n))
    np.testing.assert_array_equal(steps["episode"], np.repeat(teps["episode"], teps["length"]))
    assert np.all(np.diff(teps["policy_version_first"]) >= 0) and np.all(np.diff(teps["update"]) >= 0)
    key = lambda e: list(zip(e["update"].tolist(), e["env"].tolist()))  # noqa: E731
    assert len(set(key(teps))) == n
    rows0 = {k: i for i, k in enumerate(key(teps0))}
    idx = np.array([rows0[k] for k in key(teps)])
    for k in teps0:
        if k not in ("episode", "start"):
            np.testing.assert_array_equal(teps[k], teps0[k][idx], err_msg=k)
    assert set(key(teps)) >= {k for k in key(teps0) if k[0] > 7}


def test_resume_hello_of_4096_env_copies(tmp_path):
    """The resume's hello carries every env copy's episode seed (8 bytes each): 4,096 copies are more than the 32 KiB
    an ``irecv`` without a buffer takes. counting_v0 keeps the 4,096 copies cheap (simple_spread takes ~35 s a run)."""
    from hpcmarl.storage import load_checkpoint

    run = str(tmp_path / "run")
    args = ["train", "configs/test_tiny.yaml", *COUNTING, "env.num_envs=4096", "algo.unroll_length=2",
            "train.total_env_steps=100000000", "output.checkpoint_every=1", "output.trajectories=false",
            "runtime.timeout_s=30", f"run_dir={run}"]
    p = mpirun(2, args + ["train.max_updates=2"], timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    arrays, _ = load_checkpoint(checkpoints(run)[-1])
    assert arrays["rng/actor-00000/env_seeds"].nbytes > 32 * 1024
    p = mpirun(2, args + ["train.max_updates=3"], timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "resumed from ckpt-000000002.h5" in p.stdout
    assert int(load_checkpoint(checkpoints(run)[-1])[1]["update"]) == 3
