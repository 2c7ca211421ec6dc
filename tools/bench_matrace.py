#!/usr/bin/env python
"""MA-Trace benchmark on simple_spread_v3: decoupling, scaling and off-policy correction under lag.

In one invocation:
  1. the raw environment loop (random actions, one env, this process) for ``--raw-seconds``;
  2. scaling: 1 learner with 1, 2, 4 actors and 2 learners with 4 actors, ``--steps`` env steps each:
     env steps/s, updates/s, mean policy lag, mean truncated rho and c, return vs env steps and wall time;
     the 1+1 run's env steps/s (actors never wait) against the raw loop;
  3. injected lag: 1 learner + 2 actors whose weights are refreshed only every ``--lag`` updates, with
     MA-Trace (joint ratio), DecMA-Trace (per-agent ratios) and no correction, plus a lag-free run
     (serial mode: one rank, every unroll made with the current weights), ``--seeds`` seeds each;
  4. one long MA-Trace run (1 learner + 4 actors, ``--long-steps``) for the best return.
Writes a PNG (return vs env steps and vs wall-clock time) and ends with

    RESULT actor_vs_raw=… sps_1=… sps_4=… lag_matrace=… lag_nocorr=… nolag=… return=…

(lag_* and nolag: median final return under injected lag / without lag; return: the long run's final
mean return; returns are summed over agents, averaged over the last ``--window`` episodes).

    .venv/bin/python tools/bench_matrace.py [--steps 500000] [--seeds 3] [--lag 8] [--long-steps 3000000]
"""
import argparse
import os
import sys

import numpy as np

from _common import ROOT, launch, random_return, record

from bench_throughput import raw_loop


def summary(run, window):
    from hpcmarl.storage import Run

    r = Run(run)
    m = r.metrics()
    u = r._table("unrolls")
    ret = m["return_window/agent"]
    wall = m["wall_time"][-1] - m["wall_time"][0]
    return {"sps": (m["env_steps"][-1] - m["env_steps"][0]) / wall, "ups": (len(m["update"]) - 1) / wall,
            "lag": float(np.mean(u["lag"])), "rho": float(np.nanmean(m["agent/rho_mean"])),
            "c": float(np.nanmean(m["agent/c_mean"])), "final": float(ret[-1]), "steps": m["env_steps"],
            "wall": m["wall_time"], "ret": ret}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=os.path.join(ROOT, "configs", "matrace_spread.yaml"))
    ap.add_argument("--steps", type=int, default=500_000, help="env steps of each scaling / lag run")
    ap.add_argument("--long-steps", type=int, default=3_000_000)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--lag", type=int, default=8, help="injected lag: weights refreshed every this many updates")
    ap.add_argument("--raw-seconds", type=float, default=20.0)
    ap.add_argument("--window", type=int, default=200)
    ap.add_argument("--out-dir", default=os.path.join(ROOT, "runs", "bench_matrace"))
    ap.add_argument("overrides", nargs="*")
    a = ap.parse_args()
    os.makedirs(a.out_dir, exist_ok=True)

    import torch

    torch.set_num_threads(1)
    raw = raw_loop("simple_spread_v3", a.raw_seconds)
    print(f"raw loop: {raw:,.0f} env steps/s (random actions, one env)", flush=True)
    rand = random_return("simple_spread_v3", 500)
    print(f"random policy: {rand:.2f} mean return over 500 episodes", flush=True)

    def run(tag, np_, overrides, steps):
        path = os.path.join(a.out_dir, tag)
        launch(np_, a.config, [f"run_dir={path}", "fresh=true", f"train.total_env_steps={steps}",
                               f"output.episode_window={a.window}", "output.progress_s=30",
                               "output.checkpoint_every=100000"] + overrides + a.overrides,
               timeout=3 * 3600, log_path=path + ".log")
        return summary(path, a.window)

    res = {}
    for learners, actors in ((1, 1), (1, 2), (1, 4), (2, 4)):
        tag = f"scale-{learners}L{actors}A"
        s = res[tag] = run(tag, learners + actors, [f"topology.learners={learners}"], a.steps)
        print(f"{tag}: {s['sps']:,.0f} env steps/s, {s['ups']:.1f} updates/s, lag {s['lag']:.2f}, rho {s['rho']:.3f}, "
              f"c {s['c']:.3f}, final return {s['final']:.2f}", flush=True)
    gain = {k: res[f"scale-1L{k}A"]["final"] - rand for k in (1, 4)}
    per_step = gain[4] / gain[1]
    print(f"return at {a.steps:,} env steps: 1 actor {res['scale-1L1A']['final']:.2f}, 4 actors "
          f"{res['scale-1L4A']['final']:.2f}; improvement over random, 4 actors / 1 actor: {per_step:.3f}", flush=True)
    lagged = {}
    for corr in ("joint", "per_agent", "none"):
        for seed in range(a.seeds):
            tag = f"lag{a.lag}-{corr}-seed{seed}"
            s = res[tag] = run(tag, 3, [f"algo.correction={corr}", f"algo.push_every={a.lag}", f"seed={seed}"], a.steps)
            lagged.setdefault(corr, []).append(s["final"])
            print(f"{tag}: final return {s['final']:.2f}, lag {s['lag']:.2f}, rho {s['rho']:.3f}", flush=True)
    for seed in range(a.seeds):
        tag = f"nolag-seed{seed}"
        s = res[tag] = run(tag, 1, [f"seed={seed}"], a.steps)
        lagged.setdefault("nolag", []).append(s["final"])
        print(f"{tag}: final return {s['final']:.2f}", flush=True)
    long = res["long"] = run("long", 5, [], a.long_steps)
    print(f"long (1 learner + 4 actors, {a.long_steps:,} steps): final return {long['final']:.2f} after "
          f"{long['wall'][-1]:.0f}s", flush=True)

    print(f"\n{'run':<22} {'final return (median)':>22}")
    for k, v in lagged.items():
        print(f"{k:<22} {np.median(v):>22.2f}   ({', '.join(f'{x:.2f}' for x in v)})")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    for tag, s in res.items():
        if tag.startswith("scale") or tag == "long" or tag.endswith("seed0"):
            ax1.plot(s["steps"], s["ret"], lw=1, label=tag)
            ax2.plot(s["wall"], s["ret"], lw=1, label=tag)
    ax1.set_xlabel("env steps")
    ax2.set_xlabel("wall-clock time (s)")
    ax1.set_ylabel(f"return ({a.window}-episode mean)")
    ax1.legend(fontsize=7)
    fig.tight_layout()
    png = os.path.join(a.out_dir, "matrace.png")
    fig.savefig(png, dpi=100)
    print(f"wrote {png}")
    print(f"random={rand:.2f} per_step_4_vs_1={per_step:.3f}")
    line = (f"RESULT actor_vs_raw={res['scale-1L1A']['sps'] / raw:.3f} sps_1={res['scale-1L1A']['sps']:.0f} "
            f"sps_4={res['scale-1L4A']['sps']:.0f} lag_matrace={np.median(lagged['joint']):.2f} "
            f"lag_nocorr={np.median(lagged['none']):.2f} nolag={np.median(lagged['nolag']):.2f} "
            f"return={long['final']:.2f}")
    print(line)
    scaling = [tag for tag in res if tag.startswith("scale") or tag == "long"]
    record(__file__, sys.argv[1:], line, seeds=list(range(a.seeds)),  # final return per seed, by correction
           per_seed={k: v for k, v in lagged.items()}, medians={k: float(np.median(v)) for k, v in lagged.items()},
           extra={"raw_sps": raw, "random_return": rand, "per_step_4_vs_1": per_step, "injected_lag": a.lag,
                  "tables": {"scaling": {
                      "columns": ["run", "env steps/s", "updates/s", "policy lag", "rho", "c", "final return"],
                      "rows": [[t, res[t]["sps"], res[t]["ups"], res[t]["lag"], res[t]["rho"], res[t]["c"],
                                res[t]["final"]] for t in scaling]}}})


if __name__ == "__main__":
    main()
