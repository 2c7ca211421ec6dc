"""A stop signal at any moment ends the run with exit 75 and a resumable run directory; a wall-clock stop can be told
to do the same (``train.wall_exit_requeue``). (SIGUSR1 to mpirun mid-run: tests/e2e/test_end_to_end.py.)"""
import glob
import os
import signal
import subprocess
import sys
import time

import h5py
import pytest

from launch import ROOT, kill_group, mpi_env, mpirun, requires_mpirun, run_cmd

pytestmark = [requires_mpirun, pytest.mark.mpi]

TINY = ["configs/test_tiny.yaml", "train.total_env_steps=100000000", "output.checkpoint_every=2",
        "runtime.timeout_s=30", "runtime.startup_timeout_s=60"]


def updates(run) -> list:
    with h5py.File(os.path.join(run, "run.h5"), "r") as f:
        return [int(u) for u in f["metrics/update"][:]] if "metrics/update" in f else []  # (no row yet: none)


@pytest.mark.parametrize("rank,when", [(0, "preflight"), (0, "startup"), (2, "startup"), (0, "checkpoint")])
def test_a_signal_at_any_moment_stops_resumably(tmp_path, rank, when):
    """SIGTERM (as Slurm's notice) on one rank before its pre-flight, during start-up or while the lead writes a
    checkpoint: the run still ends with exit 75 after a final checkpoint, and the same command resumes it."""
    run = str(tmp_path / "run")
    args = ["train"] + TINY + [f"run_dir={run}", "train.max_updates=6"]
    p = mpirun(3, args, env={"HPCMARL_INJECT_FAULT": f"{rank}:sigterm:{when}"}, timeout=180)
    assert p.returncode == 75, f"{p.returncode}\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}"
    ckpts = sorted(glob.glob(os.path.join(run, "checkpoints", "ckpt-*.h5")))
    assert ckpts, "no final checkpoint"
    stopped_at = updates(run)
    assert stopped_at == list(range(1, len(stopped_at) + 1)) and len(stopped_at) < 6
    q = mpirun(3, args, timeout=180)
    assert q.returncode == 0, q.stderr[-3000:]
    assert "resumed from" in q.stdout
    assert updates(run) == list(range(1, 7))


def rank_pids(p) -> list:
    """The ranks mpirun ``p`` has started so far (exec'd: a forked child not yet exec'd still reads as mpirun)."""
    out = []
    for d in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{d}/cmdline", "rb") as f:
                argv0 = f.read().split(b"\0")[0]
        except (OSError, IndexError, ValueError):
            continue
        if ppid == p.pid and not argv0.endswith(b"mpirun"):
            out.append(int(d))
    return out


def signal_early(cmd, sig, ranks, after_s, timeout=180):
    """``(exit status, the rank's age at the signal in s, stdout, stderr)`` of ``cmd`` sent ``sig`` ``after_s`` seconds
    after its ``ranks`` ranks started (mpirun's own start would not do: mpirun drops a signal that comes before its
    ranks exist); the whole process group is killed after ``timeout`` s."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=mpi_env(), cwd=ROOT,
                         start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while ranks > 1 and len(rank_pids(p)) < ranks and time.monotonic() < deadline:
            time.sleep(0.002)
        t0 = time.monotonic()  # (one process: Popen returns once it has exec'd)
        time.sleep(after_s)
        p.send_signal(sig)
        age = time.monotonic() - t0
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(p)
        out, err = p.communicate()
        pytest.fail(f"timed out after {timeout}s: {' '.join(cmd)}\n{out[-2000:]}\n{err[-3000:]}")
    finally:
        if p.poll() is None:
            kill_group(p)
    kill_group(p)
    return p.returncode, age, out, err


@pytest.mark.parametrize("ranks,sig,after_s", [(1, signal.SIGTERM, 0.1), (2, signal.SIGUSR1, 0.2)],
                         ids=["SIGTERM", "mpirun-SIGUSR1"])
def test_a_signal_in_the_first_moments_stops_resumably(tmp_path, ranks, sig, after_s):
    """The hpcmarl command installs the stop handlers first, an interpreter's start into a rank's life (some 0.05 s;
    they came after train's imports, 0.2-2 s in, and a signal before them killed the rank): SIGTERM to one process
    0.1 s in, or SIGUSR1 to mpirun (forwarded) 0.2 s into its ranks' life (two interpreters start together on the
    cores), ends the run with exit 75 (not 143 or 138), and the same command resumes it from the final checkpoint."""
    run = str(tmp_path / "run")
    cmd = [os.path.join(os.path.dirname(sys.executable), "hpcmarl"), "train"] + TINY + [f"run_dir={run}",
                                                                                          "train.max_updates=6"]
    if ranks > 1:
        cmd = ["mpirun", "-n", str(ranks), "--bind-to", "none"] + cmd
    code, age, out, err = signal_early(cmd, sig, ranks, after_s)
    assert code == 75, f"exit {code} ({sig.name} at {age:.2f} s)\n{out[-2000:]}\n{err[-3000:]}"
    assert glob.glob(os.path.join(run, "checkpoints", "ckpt-*.h5")), "no final checkpoint"
    q = run_cmd(cmd, timeout=180)
    assert q.returncode == 0, q.stderr[-3000:]
    assert "resumed from" in q.stdout
    assert updates(run) == list(range(1, 7))


def test_wall_clock_stop_can_ask_for_a_requeue(tmp_path):
    run = str(tmp_path / "run")
    base = ["train"] + TINY + [f"run_dir={run}", "train.max_wall_s=4"]
    p = mpirun(3, base + ["train.wall_exit_requeue=true"], timeout=180)
    assert p.returncode == 75, p.stderr[-3000:]
    assert "max_wall_s reached" in p.stdout and glob.glob(os.path.join(run, "checkpoints", "ckpt-*.h5"))
    q = mpirun(3, base, timeout=180)  # default: a wall-clock stop is a normal end
    assert q.returncode == 0, q.stderr[-3000:]
