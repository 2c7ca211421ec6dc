#!/usr/bin/env python
"""Cost of the live loggers (``output.loggers``) on training throughput: the demo config (``configs/demo.yaml``,
``--ranks`` MPI ranks as ``make demo``) trained for ``--steps`` env steps without loggers and with each logger alone
(W&B offline, MLflow's default SQLite store in the run), the arms run one after another in alternating order
(none, tensorboard, wandb, mlflow, then reversed, ``--repeats`` times; never two runs at once).

Throughput of a run: env steps per second between its first and its last run.h5 /metrics row (the steady rate; the
startup, the loggers' opening included, is reported apart as ``<arm>_first_row_s``: wall seconds to the first
row). Per arm the median over the repeats; ratios are an arm's over no logger's. Last line:

    RESULT none_sps=… tensorboard_ratio=… wandb_ratio=… mlflow_ratio=… none_first_row_s=… …

    .venv/bin/python tools/bench_tracking.py [--steps 60k] [--repeats 2] [--ranks 3]
"""
import argparse
import os
import sys

import numpy as np

from _common import ROOT, launch, parse_steps, record

from hpcmarl.analysis.export import load_run

ARMS = ("none", "tensorboard", "wandb", "mlflow")


def rate(run_dir):
    m = load_run(run_dir).metrics
    steps, wall = m["env_steps"], m["wall_time"]
    return float((steps[-1] - steps[0]) / (wall[-1] - wall[0])), float(wall[0]), int(steps[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", default="60k", help="env steps per run")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--ranks", type=int, default=3)
    ap.add_argument("--out", default=os.path.join(ROOT, "runs", "bench_tracking"))
    args = ap.parse_args()
    steps = parse_steps(args.steps)
    per = {a: [] for a in ARMS}
    first = {a: [] for a in ARMS}
    for rep in range(args.repeats):
        for arm in (ARMS if rep % 2 == 0 else ARMS[::-1]):
            run_dir = os.path.join(args.out, f"{arm}-{rep}")
            launch(args.ranks, os.path.join(ROOT, "configs", "demo.yaml"),
                   [f"run_dir={run_dir}", f"train.total_env_steps={steps}", "train.target_return=null", "--fresh",
                    f"output.loggers=[{'' if arm == 'none' else arm}]"], timeout=1800, log_path=run_dir + ".log")
            sps, t_first, done = rate(run_dir)
            per[arm].append(sps)
            first[arm].append(t_first)
            print(f"{arm:>12} repeat {rep}: {sps:8.0f} env steps/s, first row after {t_first:5.1f}s, {done} env steps",
                  flush=True)
    med = {a: float(np.median(per[a])) for a in ARMS}
    line = (f"RESULT none_sps={med['none']:.0f} " + " ".join(f"{a}_ratio={med[a] / med['none']:.3f}" for a in ARMS[1:])
            + " " + " ".join(f"{a}_first_row_s={np.median(first[a]):.1f}" for a in ARMS))
    print(line)
    record(__file__, sys.argv[1:], line, per_seed={"sps": per, "first_row_s": first},
           medians={"sps": med}, seeds=list(range(args.repeats)))


if __name__ == "__main__":
    main()
