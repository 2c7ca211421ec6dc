"""Helpers shared by the benchmark scripts in tools/ (launching runs, reading their outputs)."""
import argparse
import os
import re
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def parse_steps(text: str) -> int:
    """An env-step count as benchmarks take it: 250000, 500k, 1m, 1.5m."""
    m = re.fullmatch(r"([\d.]+)([km]?)", text.strip().lower())
    if not m:
        raise SystemExit(f"bad env-step budget {text!r} (e.g. 500k, 1m, 250000)")
    return int(float(m.group(1)) * {"": 1, "k": 1_000, "m": 1_000_000}[m.group(2)])


def launch(np_, config, overrides, timeout, log_path=None):
    """Run ``hpcmarl train`` under mpirun (or directly for one rank) with a hard timeout."""
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1", OMPI_MCA_mpi_yield_when_idle="1", PYTHONUNBUFFERED="1",
               HOROVOD_LOG_LEVEL="error")
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


def timed_run_parser(description, out, budget_s=600.0, ranks=4, windows=5):
    """Arguments of a benchmark that trains one config for a wall-clock budget and reports it in time windows."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--budget-s", type=float, default=budget_s, help="training wall-clock seconds")
    ap.add_argument("--ranks", type=int, default=ranks)
    ap.add_argument("--windows", type=int, default=windows, help="report in this many equal parts of the run")
    ap.add_argument("--out", default=os.path.join(ROOT, "runs", out))
    ap.add_argument("--skip-train", action="store_true", help="report the run already in --out")
    return ap


def train_timed(args, config):
    """Train ``configs/<config>`` for ``args.budget_s`` seconds into ``args.out`` (unless ``--skip-train``)."""
    if args.skip_train:
        return
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    t = launch(args.ranks, os.path.join(ROOT, "configs", config),
               [f"run_dir={args.out}", f"train.max_wall_s={args.budget_s}", "train.total_env_steps=1000000000",
                "--fresh"],
               timeout=args.budget_s + 600, log_path=args.out + ".log")
    print(f"trained {args.budget_s:.0f}s ({t:.0f}s with startup); log {args.out}.log", flush=True)
