#!/usr/bin/env python
"""Learning check: MAPPO on simple_spread_v3 with 2 learners + 2 actors until the mean episode return
(summed over the agents, averaged over a window of episodes) reaches the threshold, or the budget ends.

Last line: ``RESULT return=… env_steps=… wall_s=…`` — the windowed return, env steps and wall-clock
seconds when the threshold was first reached, or the best windowed return (and where it was) if never.

    .venv/bin/python tools/bench_learning.py [--threshold -55] [--max-minutes 40] [--run-dir runs/bench_learning]
"""
import argparse
import os
import sys

import numpy as np

from _common import ROOT, launch, record


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=os.path.join(ROOT, "configs", "simple_spread_mappo.yaml"))
    ap.add_argument("--threshold", type=float, default=-55.0)
    ap.add_argument("--window", type=int, default=500, help="episodes averaged (500 = ~16 updates here)")
    ap.add_argument("--max-minutes", type=float, default=40.0)
    ap.add_argument("--max-steps", type=int, default=20_000_000)
    ap.add_argument("--np", type=int, default=4)
    ap.add_argument("--learners", type=int, default=2)
    ap.add_argument("--run-dir", default=os.path.join(ROOT, "runs", "bench_learning"))
    ap.add_argument("overrides", nargs="*")
    a = ap.parse_args()
    a.run_dir = os.path.abspath(a.run_dir)

    print(f"training MAPPO on simple_spread_v3 ({a.learners} learners + {a.np - a.learners} actors) until the "
          f"{a.window}-episode mean return reaches {a.threshold} (budget {a.max_minutes} min, {a.max_steps:,} steps); "
          f"log: {a.run_dir}.log", flush=True)
    launch(a.np, a.config, [f"run_dir={a.run_dir}", f"topology.learners={a.learners}", "fresh=true",
                            f"train.max_wall_s={a.max_minutes * 60}", f"train.total_env_steps={a.max_steps}",
                            f"train.target_return={a.threshold}", f"output.episode_window={a.window}",
                            "output.progress_s=30"] + a.overrides,
           timeout=a.max_minutes * 60 + 600, log_path=a.run_dir + ".log")

    from hpcmarl.storage import Run

    ep = Run(a.run_dir).episodes()
    ret = sum(v for k, v in ep.items() if k.startswith("return/"))  # summed over groups
    if len(ret) < a.window:
        raise SystemExit(f"only {len(ret)} episodes finished")
    # the window mean at every update boundary (what the run's own target check sees)
    ends = np.flatnonzero(np.diff(ep["update"], append=np.inf)) + 1
    ends = ends[ends >= a.window]
    csum = np.concatenate([[0.0], np.cumsum(ret)])
    smooth = (csum[ends] - csum[ends - a.window]) / a.window
    hit = np.flatnonzero(smooth >= a.threshold)
    i = int(hit[0]) if len(hit) else int(np.argmax(smooth))
    row = ends[i] - 1
    status = "reached" if len(hit) else "NOT reached (best shown)"
    print(f"threshold {a.threshold} {status}: {a.window}-episode return {smooth[i]:.2f} "
          f"at update {int(ep['update'][row])}, "
          f"{int(ep['env_steps'][row]):,} env steps, {ep['wall_time'][row]:.0f}s; last {smooth[-1]:.2f} after "
          f"{int(ep['env_steps'][-1]):,} env steps")
    line = f"RESULT return={smooth[i]:.2f} env_steps={int(ep['env_steps'][row])} wall_s={ep['wall_time'][row]:.1f}"
    print(line)
    record(__file__, sys.argv[1:], line, extra={"reached": bool(len(hit)), "threshold": a.threshold,
                                                "window": a.window, "last_return": smooth[-1],
                                                "last_env_steps": int(ep["env_steps"][-1])})


if __name__ == "__main__":
    main()
