"""Shared test helpers: launching hpcmarl under mpirun with a hard timeout (on sys.path via pytest.ini)."""
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable
HPCMARL = [PY, "-m", "hpcmarl.cli"]


def mpi_env(extra=None):
    env = dict(os.environ)
    env.update({"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
                "OMPI_MCA_rmaps_base_oversubscribe": "1", "OMPI_MCA_mpi_yield_when_idle": "1", "PYTHONUNBUFFERED": "1",
                "HOROVOD_LOG_LEVEL": "error"})
    env.update(extra or {})
    return env


def run_cmd(args, timeout=240, env=None, cwd=ROOT):
    """Run a command with a hard timeout; the whole process group is killed when it expires."""
    try:
        p = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=mpi_env(env), cwd=cwd,
                           start_new_session=True)
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        err = (e.stderr or b"").decode() if isinstance(e.stderr, bytes) else (e.stderr or "")
        pytest.fail(f"command timed out after {timeout}s (a hang): {' '.join(args)}\nstdout:\n{out[-3000:]}\nstderr:\n{err[-3000:]}")
    return p


def mpirun(n, hpcmarl_args, timeout=240, env=None):
    return run_cmd(["mpirun", "-n", str(n), "--bind-to", "none"] + HPCMARL + list(hpcmarl_args), timeout=timeout, env=env)


def hpcmarl(args, timeout=120, env=None):
    return run_cmd(HPCMARL + list(args), timeout=timeout, env=env)


requires_mpirun = pytest.mark.skipif(shutil.which("mpirun") is None, reason="mpirun not installed (make test installs it)")
