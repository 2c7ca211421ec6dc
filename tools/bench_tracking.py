#!/usr/bin/env python
"""Cost of the live loggers (``output.loggers``) and of the evaluation protocol (``eval.*``) on training throughput: the
demo config (``configs/demo.yaml``, ``--ranks`` MPI ranks as ``make demo``) trained for ``--steps`` env steps without
either and with each logger alone (W&B offline, MLflow's default SQLite store in the run), and with evaluations of
``--eval-episodes`` episodes every ``--eval-every`` env steps, one run at a time. The machine's speed drifts (other
work), so every logger run is paired with a run without loggers right next to it (order alternating: none then the
logger, the logger then none), the pairs in rotating order, ``--repeats`` times; an arm's ratio is the median over
its pairs of its throughput over its partner's.

Throughput of a run: env steps per second between its first and its last run.h5 /metrics row (the steady rate; the
startup, the loggers' opening included, is reported apart as ``<arm>_first_row_s``: wall seconds to the first
row, median). Last line:

    RESULT none_sps=… tensorboard_ratio=… wandb_ratio=… mlflow_ratio=… eval_ratio=… none_first_row_s=… …

    .venv/bin/python tools/bench_tracking.py [--steps 60k] [--repeats 3] [--ranks 3] [--eval-every 10k]
        [--eval-episodes 10]
"""
import argparse
import os
import sys

import numpy as np

from _common import ROOT, launch, parse_steps, record

from hpcmarl.analysis.export import load_run

ARMS = ("none", "tensorboard", "wandb", "mlflow", "eval")


def rate(run_dir):
    m = load_run(run_dir).metrics
    steps, wall = m["env_steps"], m["wall_time"]
    return float((steps[-1] - steps[0]) / (wall[-1] - wall[0])), float(wall[0]), int(steps[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", default="60k", help="env steps per run")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--ranks", type=int, default=3)
    ap.add_argument("--eval-every", default="10k", help="the eval arm's eval.every_env_steps")
    ap.add_argument("--eval-episodes", type=int, default=10, help="the eval arm's eval.episodes (eval.num_envs: "
                    "the default, one env copy per episode)")
    ap.add_argument("--out", default=os.path.join(ROOT, "runs", "bench_tracking"))
    args = ap.parse_args()
    steps = parse_steps(args.steps)
    per = {a: [] for a in ARMS}
    first = {a: [] for a in ARMS}
    ratios = {a: [] for a in ARMS[1:]}

    overrides = {"none": [], "eval": [f"eval.every_env_steps={parse_steps(args.eval_every)}",
                                      f"eval.episodes={args.eval_episodes}"]}

    def train(arm, tag):
        run_dir = os.path.join(args.out, f"{arm}-{tag}")
        launch(args.ranks, os.path.join(ROOT, "configs", "demo.yaml"),
               [f"run_dir={run_dir}", f"train.total_env_steps={steps}", "train.target_return=null", "--fresh"]
               + overrides.get(arm, [f"output.loggers=[{arm}]"]), timeout=1800, log_path=run_dir + ".log")
        sps, t_first, done = rate(run_dir)
        per[arm].append(sps)
        first[arm].append(t_first)
        print(f"{arm:>12} {tag}: {sps:8.0f} env steps/s, first row after {t_first:5.1f}s, {done} env steps",
              flush=True)
        return sps

    others = list(ARMS[1:])
    for rep in range(args.repeats):
        k = rep % len(others)
        for i, arm in enumerate(others[k:] + others[:k]):
            if (rep + i) % 2 == 0:
                base, x = train("none", f"{rep}{arm[0]}"), train(arm, rep)
            else:
                x, base = train(arm, rep), train("none", f"{rep}{arm[0]}")
            ratios[arm].append(x / base)
    med = {a: float(np.median(per[a])) for a in ARMS}
    line = (f"RESULT none_sps={med['none']:.0f} "
            + " ".join(f"{a}_ratio={np.median(ratios[a]):.3f}" for a in ARMS[1:])
            + " " + " ".join(f"{a}_first_row_s={np.median(first[a]):.1f}" for a in ARMS))
    print(line)
    record(__file__, sys.argv[1:], line, per_seed={"sps": per, "first_row_s": first, "pair_ratio": ratios},
           medians={"sps": med, "ratio": {a: float(np.median(ratios[a])) for a in ARMS[1:]}},
           seeds=list(range(args.repeats)))

if __name__ == "__main__":
    main()
