"""A stop signal at any moment ends the run with exit 75 and a resumable run directory; a wall-clock stop can be told
to do the same (``train.wall_exit_requeue``). (SIGUSR1 to mpirun mid-run: tests/e2e/test_end_to_end.py.)"""
import glob
import os

import h5py
import pytest

from launch import mpirun, requires_mpirun

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


def test_wall_clock_stop_can_ask_for_a_requeue(tmp_path):
    run = str(tmp_path / "run")
    base = ["train"] + TINY + [f"run_dir={run}", "train.max_wall_s=4"]
    p = mpirun(3, base + ["train.wall_exit_requeue=true"], timeout=180)
    assert p.returncode == 75, p.stderr[-3000:]
    assert "max_wall_s reached" in p.stdout and glob.glob(os.path.join(run, "checkpoints", "ckpt-*.h5"))
    q = mpirun(3, base, timeout=180)  # default: a wall-clock stop is a normal end
    assert q.returncode == 0, q.stderr[-3000:]
