#!/usr/bin/env python
"""Throughput: the raw PettingZoo loop with random actions vs. an hpcmarl actor with policy inference.

In one invocation: (1) one environment stepped in a plain Python loop with random actions for
``--raw-seconds``; (2) a 2-rank run (1 learner + 1 actor, synchronous MAPPO, default config) for
``--train-seconds``; the actor's env steps/s is taken from ``run.h5`` between the first and the last
update, so it includes every wait for the learner. ``--ranks N`` runs 1 learner + N-1 actors (the end-to-end rate
over the raw 1-core loop is ``cores_ratio``). Last line:
``RESULT raw_sps=… actor_sps=… ratio=… collect_ratio=… total_sps=… cores_ratio=…``.

    .venv/bin/python tools/bench_throughput.py [--env simple_spread_v3] [--train-seconds 60] [--ranks 2] [key=value ...]
    .venv/bin/python tools/bench_throughput.py --ranks 3 actors.overlap=true   # both cores, one-step-stale actors
"""
import argparse
import os
import sys
import tempfile

from _common import ROOT, env_speed, launch, record


def raw_loop(name: str, seconds: float) -> float:
    """The raw PettingZoo loop: the env as its package makes it (with PettingZoo's checking wrappers)."""
    return env_speed(seconds, name, checks=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--env", default="simple_spread_v3")
    ap.add_argument("--config", default=os.path.join(ROOT, "configs", "simple_spread_mappo.yaml"))
    ap.add_argument("--raw-seconds", type=float, default=20.0)
    ap.add_argument("--train-seconds", type=float, default=60.0)
    ap.add_argument("--ranks", type=int, default=2, help="1 learner + ranks-1 actors")
    ap.add_argument("overrides", nargs="*", help="extra key=value overrides for the training run")
    a = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    raw = raw_loop(a.env, a.raw_seconds)
    print(f"raw loop: {raw:,.0f} env steps/s ({a.env}, random actions, one env, {a.raw_seconds:.0f}s)", flush=True)

    from hpcmarl.storage import Run

    with tempfile.TemporaryDirectory() as tmp:
        run_dir = os.path.join(tmp, "run")
        launch(a.ranks, a.config, [f"run_dir={run_dir}", f"env.name={a.env}", f"train.max_wall_s={a.train_seconds}",
                             "train.total_env_steps=1000000000", "output.progress_s=10"] + a.overrides,
               timeout=a.train_seconds + 300, log_path=os.path.join(tmp, "log"))
        m = Run(run_dir).metrics()
    steps, wall = m["env_steps"], m["wall_time"]
    n_actors = a.ranks - 1
    total = (steps[-1] - steps[0]) / (wall[-1] - wall[0])
    actor = total / n_actors
    collect = float(m["time/collect"].mean())
    per_update = float((steps[-1] - steps[0]) / (len(steps) - 1)) / n_actors  # one actor's unroll
    print(f"actor (1 learner + {n_actors} actor(s), synchronous {a.env} {' '.join(a.overrides)}): {actor:,.0f} env "
          f"steps/s each over {len(steps)} updates, {total:,.0f} in all; while collecting {per_update / collect:,.0f} "
          f"env steps/s; mean update {m['time/update'].mean() * 1e3:.1f} ms, "
          f"collect {collect * 1e3:.1f} ms per unroll, "
          f"policy lag {m['lag_mean'].mean():.2f}", flush=True)
    line = (f"RESULT raw_sps={raw:.0f} actor_sps={actor:.0f} ratio={actor / raw:.3f} "
            f"collect_ratio={per_update / collect / raw:.3f} total_sps={total:.0f} cores_ratio={total / raw:.3f}")
    print(line)
    record(__file__, sys.argv[1:], line, extra={"actors": n_actors, "updates": len(steps),
                                                "update_ms": float(m["time/update"].mean()) * 1e3,
                                                "collect_ms": collect * 1e3, "policy_lag": float(m["lag_mean"].mean())})


if __name__ == "__main__":
    main()
