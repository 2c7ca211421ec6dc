#!/usr/bin/env python
"""Learning check: MAPPO on simple_spread_v3 with 2 learners + 2 actors until the mean episode return
(summed over the agents, averaged over a window of episodes) reaches the threshold, or the budget ends.

Last line: ``RESULT return=… env_steps=… wall_s=…`` — the windowed return, env steps and wall-clock
seconds (the run's training clock) when the threshold was first reached, or the best windowed return (and where it
was) if never; with ``--seeds`` one run per seed, one after another, the medians and ``reached=K/N``.

    .venv/bin/python tools/bench_learning.py [--threshold -55] [--max-minutes 40] [--run-dir runs/bench_learning]
        [--seeds 1000,1001,1002] [key=value ...]
"""
import argparse
import os
import sys

import numpy as np

from _common import ROOT, launch, record, seed_list


def reach(run_dir: str, window: int, threshold: float) -> dict:
    """Where the ``window``-episode mean return (summed over groups, at every update boundary: what the run's own
    target check sees) first reached ``threshold``, or its best if never."""
    from hpcmarl.storage import Run

    ep = Run(run_dir).episodes()
    ret = sum(v for k, v in ep.items() if k.startswith("return/"))  # summed over groups
    if len(ret) < window:
        raise SystemExit(f"{run_dir}: only {len(ret)} episodes finished")
    ends = np.flatnonzero(np.diff(ep["update"], append=np.inf)) + 1
    ends = ends[ends >= window]
    csum = np.concatenate([[0.0], np.cumsum(ret)])
    smooth = (csum[ends] - csum[ends - window]) / window
    hit = np.flatnonzero(smooth >= threshold)
    i = int(hit[0]) if len(hit) else int(np.argmax(smooth))
    row = ends[i] - 1
    return {"reached": bool(len(hit)), "return": float(smooth[i]), "update": int(ep["update"][row]),
            "env_steps": int(ep["env_steps"][row]), "wall_s": float(ep["wall_time"][row]),
            "last_return": float(smooth[-1]), "last_env_steps": int(ep["env_steps"][-1])}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=os.path.join(ROOT, "configs", "simple_spread_mappo.yaml"))
    ap.add_argument("--threshold", type=float, default=-55.0)
    ap.add_argument("--window", type=int, default=500, help="episodes averaged (500 = ~16 updates here)")
    ap.add_argument("--max-minutes", type=float, default=40.0)
    ap.add_argument("--max-steps", type=int, default=20_000_000)
    ap.add_argument("--np", type=int, default=4)
    ap.add_argument("--learners", type=int, default=2)
    ap.add_argument("--seeds", type=seed_list, default=None,
                    help="train once per seed, one after another (e.g. the held-out 1000,1001,1002); the RESULT "
                         "holds the medians (default: one run with the config's seed)")
    ap.add_argument("--run-dir", default=os.path.join(ROOT, "runs", "bench_learning"))
    ap.add_argument("overrides", nargs="*")
    a = ap.parse_args()
    a.run_dir = os.path.abspath(a.run_dir)

    print(f"training {os.path.basename(a.config)} ({a.learners} learners + {a.np - a.learners} actors) until the "
          f"{a.window}-episode mean return reaches {a.threshold} (budget {a.max_minutes} min, {a.max_steps:,} steps"
          f"{', seeds ' + ','.join(map(str, a.seeds)) if a.seeds else ''}); log: {a.run_dir}*.log", flush=True)
    results = []
    for seed in a.seeds or [None]:
        run_dir = a.run_dir if seed is None else f"{a.run_dir}-{seed}"
        launch(a.np, a.config, [f"run_dir={run_dir}", f"topology.learners={a.learners}", "fresh=true",
                                f"train.max_wall_s={a.max_minutes * 60}", f"train.total_env_steps={a.max_steps}",
                                f"train.target_return={a.threshold}", f"output.episode_window={a.window}",
                                "output.progress_s=30"] + ([f"seed={seed}"] if seed is not None else []) + a.overrides,
               timeout=a.max_minutes * 60 + 600, log_path=run_dir + ".log")
        r = reach(run_dir, a.window, a.threshold)
        results.append(r)
        print(f"{'' if seed is None else f'seed {seed}: '}threshold {a.threshold} "
              f"{'reached' if r['reached'] else 'NOT reached (best shown)'}: {a.window}-episode return "
              f"{r['return']:.2f} at update {r['update']}, {r['env_steps']:,} env steps, {r['wall_s']:.1f}s; last "
              f"{r['last_return']:.2f} after {r['last_env_steps']:,} env steps", flush=True)
    med = {k: float(np.median([r[k] for r in results])) for k in ("return", "env_steps", "wall_s")}
    line = f"RESULT return={med['return']:.2f} env_steps={int(med['env_steps'])} wall_s={med['wall_s']:.1f}"
    if a.seeds:
        line += f" reached={sum(r['reached'] for r in results)}/{len(results)}"
    print(line)
    if a.seeds:
        record(__file__, sys.argv[1:], line, seeds=a.seeds,
               per_seed={k: [r[k] for r in results] for k in ("return", "env_steps", "wall_s", "reached")},
               medians=med, extra={"threshold": a.threshold, "window": a.window})
    else:
        r = results[0]
        record(__file__, sys.argv[1:], line, extra={"reached": r["reached"], "threshold": a.threshold,
                                                    "window": a.window, "last_return": r["last_return"],
                                                    "last_env_steps": r["last_env_steps"]})


if __name__ == "__main__":
    main()
