"""Shared test helpers: launching hpcmarl under mpirun with a hard timeout (on sys.path via pytest.ini)."""
import os
import shutil
import signal
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable
HPCMARL = [PY, "-m", "hpcmarl.cli"]
# the counting fake (hpcmarl/testing.py, not in the production registry): every rank imports its module as a plugin
COUNTING = ["plugins=[hpcmarl.testing]", "env.name=counting_v0"]


def mpi_env(extra=None):
    env = dict(os.environ)
    env.update({"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
                "OMPI_MCA_rmaps_base_oversubscribe": "1", "OMPI_MCA_mpi_yield_when_idle": "1", "PYTHONUNBUFFERED": "1",
                "HOROVOD_LOG_LEVEL": "error"})
    env.update(extra or {})
    return env


def run_cmd(args, timeout=240, env=None, cwd=ROOT):
    """Run a command with a hard timeout; on expiry the whole process group (mpirun and every rank it started,
    hung ones included) is killed before the test fails, so no rank outlives its test."""
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=mpi_env(env), cwd=cwd,
                         start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(p)
        out, err = p.communicate()
        pytest.fail(f"command timed out after {timeout}s (a hang): {' '.join(args)}\nstdout:\n{out[-3000:]}\n"
                    f"stderr:\n{err[-3000:]}")
    finally:
        if p.poll() is None:  # an exception in the test itself (KeyboardInterrupt): leave nothing behind
            kill_group(p)
    kill_group(p)  # ranks that outlived mpirun (none should)
    return subprocess.CompletedProcess(args, p.returncode, out, err)


def kill_group(p) -> None:
    """SIGKILL every process of ``p``'s session (started with ``start_new_session=True``)."""
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        p.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pass


def mpirun(n, hpcmarl_args, timeout=240, env=None):
    return run_cmd(["mpirun", "-n", str(n), "--bind-to", "none"] + HPCMARL + list(hpcmarl_args), timeout=timeout,
                   env=env)


def hpcmarl(args, timeout=120, env=None):
    return run_cmd(HPCMARL + list(args), timeout=timeout, env=env)


# tests that repeat a longer check in another setting (each names the quicker test CI runs instead): run by hand
by_hand = pytest.mark.skipif(not os.environ.get("HPCMARL_LONG"), reason="by hand: HPCMARL_LONG=1")

requires_mpirun = pytest.mark.skipif(shutil.which("mpirun") is None,
                                     reason="mpirun not installed (make test installs it)")


def require_extra(module: str, extra: str):
    """Import ``module`` of the setup.py extra ``extra`` (``pip install -e ".[extra]"``); skip the test when it is
    missing, unless ``HPCMARL_EXTRAS`` (set by ``make test``, whose setup installs them) lists the extra: there a
    missing package fails the test instead of skipping it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        if extra in os.environ.get("HPCMARL_EXTRAS", "").split(","):
            raise
        pytest.skip(f"{module} not installed (pip install -e \".[{extra}]\", or make setup EXTRAS={extra})",
                    allow_module_level=True)  # test modules call it at import to skip all their tests


def final_arrays(run):
    """``(arrays, attrs)`` of the newest checkpoint of the run directory ``run``."""
    import glob

    from hpcmarl.storage import load_checkpoint

    return load_checkpoint(sorted(glob.glob(os.path.join(str(run), "checkpoints", "ckpt-*.h5")))[-1])
