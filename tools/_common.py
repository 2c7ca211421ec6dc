"""Helpers shared by the benchmark scripts in tools/ (launching runs, reading their outputs)."""
import os
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def launch(np_, config, overrides, timeout, log_path=None):
    """Run ``hpcmarl train`` under mpirun (or directly for one rank) with a hard timeout."""
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1", OMPI_MCA_mpi_yield_when_idle="1", PYTHONUNBUFFERED="1", HOROVOD_LOG_LEVEL="error")
    cmd = [sys.executable, "-m", "hpcmarl.cli", "train", config] + list(overrides)
    if np_ > 1:
        cmd = [shutil.which("mpirun") or "mpirun", "-n", str(np_), "--bind-to", "none"] + cmd
    t0 = time.monotonic()
    out = open(log_path, "w") if log_path else subprocess.DEVNULL
    try:
        p = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT, timeout=timeout,
                           start_new_session=True)
    finally:
        if log_path:
            out.close()
    if p.returncode != 0:
        tail = open(log_path).read()[-3000:] if log_path else ""
        raise SystemExit(f"run failed (exit {p.returncode}): {' '.join(cmd)}\n{tail}")
    return time.monotonic() - t0


def random_return(name, episodes):
    """Mean return (summed over agents) of uniformly random actions over ``episodes`` episodes."""
    from hpcmarl.envs import make_parallel_env

    env = make_parallel_env(name)
    total = 0.0
    for ep in range(episodes):
        env.reset(seed=10_000 + ep)
        while env.agents:
            _, rew, _, _, _ = env.step({a: env.action_space(a).sample() for a in env.agents})
            total += sum(rew.values())
    return total / episodes
