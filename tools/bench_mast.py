#!/usr/bin/env python
"""MAST benchmark on simple_spread_v3: dense QMIX, RigL-only and MAST at 90% sparsity, and MAST with each
component removed, over several seeds: final return, training FLOPs and inference FLOPs (active weights only).

Every run is one rank (the learner steps its own environments) with one torch thread, ``--parallel`` runs at
a time, ``--steps`` env steps each; final return = mean over the last ``--window`` episodes. Variants:

    dense        QMIX, double-Q one-step targets, one replay
    rigl         90% sparse (Erdos-Renyi), RigL drop/grow; otherwise as dense
    mast         rigl + Soft Mellowmax + hybrid TD(lambda) + dual replay      (configs/mast_spread.yaml)
    mast-no-sm / mast-no-td / mast-no-dual / mast-static   MAST without one component (static: no RigL updates)

Draws the curves (return vs env steps, seed mean) in ``docs/results/img/<record>.png`` and ends with

    RESULT retained=… train_flops_ratio=… mast_return=… rigl_return=… dense_return=… random_return=…

(retained = (R_mast - R_random) / (R_dense - R_random) on medians over seeds; train_flops_ratio = dense
training FLOPs / MAST training FLOPs).

    .venv/bin/python tools/bench_mast.py [--steps 400000] [--seeds 1000,1001,1002] [--parallel 2]
        [--variants dense,rigl,mast] [--reuse]

``--seeds``: the held-out evaluation seeds by default (``_common.EVAL_SEEDS``). ``--reuse`` with the same command goes
on where a benchmark stopped: finished runs in ``--out-dir`` are read again, a run cut short goes on from its newest
checkpoint.
"""
import argparse
import os
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from _common import EVAL_SEEDS, ROOT, launch, random_return, record, record_id, seed_list, trained_steps

OFF = ["algo.sparsity=0", "algo.mellowmax_omega=0", "algo.td_lambda=0", "algo.recent_episodes=0"]
VARIANTS = {
    "dense": OFF,
    "rigl": OFF + ["algo.sparsity=0.9"],
    "mast": [],
    "mast-no-sm": ["algo.mellowmax_omega=0"],
    "mast-no-td": ["algo.td_lambda=0"],
    "mast-no-dual": ["algo.recent_episodes=0"],
    "mast-static": ["algo.topology_every=0"],
}


def summary(run, window):
    from hpcmarl.storage import Run

    r = Run(run)
    m, ep = r.metrics(), r.episodes()
    return {"final": float(np.mean(ep["return/agent"][-window:])), "train_flops": float(m["flops/train_total"][-1]),
            "inf_flops": float(m["flops/inference_step"][-1]), "sparsity": float(m["sparsity"][-1]),
            "steps": m["env_steps"], "ret": m["return_window/agent"], "wall": float(m["wall_time"][-1])}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=os.path.join(ROOT, "configs", "mast_spread.yaml"))
    ap.add_argument("--steps", type=int, default=400_000)
    ap.add_argument("--seeds", type=seed_list, default=list(EVAL_SEEDS), help="comma-separated seeds")
    ap.add_argument("--parallel", type=int, default=2, help="runs at a time (one core each)")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--window", type=int, default=200)
    ap.add_argument("--out-dir", default=os.path.join(ROOT, "runs", "bench_mast"))
    ap.add_argument("--reuse", action="store_true", help="read finished runs in --out-dir again; resume cut ones")
    ap.add_argument("overrides", nargs="*")
    a = ap.parse_args()
    os.makedirs(a.out_dir, exist_ok=True)
    names = a.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variant(s) {unknown} (known: {', '.join(VARIANTS)})")
    from hpcmarl.config import load_config

    cfg = load_config(a.config, a.overrides)
    grad_steps = a.steps // (cfg.env.num_envs * cfg.algo.unroll_length) * cfg.algo.train_steps
    topo_end = int(0.75 * grad_steps)  # RigL's drop fraction anneals to 0 over the first 75% of training
    print(f"{grad_steps:,} gradient steps per run; topology updates every {cfg.algo.topology_every} "
          f"until step {topo_end:,}")
    rand = random_return("simple_spread_v3", 500)
    print(f"random policy: {rand:.2f} mean return over 500 episodes", flush=True)

    def run(job):
        name, seed = job
        path = os.path.join(a.out_dir, f"{name}-seed{seed}")
        reached = trained_steps(path) if a.reuse else -1
        if reached < a.steps:
            from hpcmarl.storage import Run

            resume = reached >= 0 and bool(Run(path).checkpoints())  # --reuse: a run cut short goes on
            print(f"{name} seed {seed}: {f'resuming at {reached:,} env steps' if resume else 'training'}", flush=True)
            launch(1, a.config, [f"run_dir={path}", f"fresh={str(not resume).lower()}", f"seed={seed}",
                                 f"train.total_env_steps={a.steps}", f"output.episode_window={a.window}",
                                 "output.progress_s=60", "learner.threads=1", "output.checkpoint_every=200",
                                 f"algo.topology_end={topo_end}"] + VARIANTS[name] + a.overrides,
                   timeout=4 * 3600, log_path=path + ".log")
        s = summary(path, a.window)
        print(f"{name} seed {seed}: final return {s['final']:.2f}, train FLOPs {s['train_flops']:.3e}, inference "
              f"FLOPs/step {s['inf_flops']:.3e}, sparsity {s['sparsity']:.3f}, {s['wall']:.0f}s", flush=True)
        return job, s

    jobs = [(n, seed) for seed in a.seeds for n in names]
    with ThreadPoolExecutor(a.parallel) as pool:
        res = dict(pool.map(run, jobs))

    print(f"\n{'variant':<14} {'final return (median)':>22} {'per seed':>26} {'train FLOPs':>12} "
          f"{'infer FLOPs/step':>17}")
    med = {}
    for n in names:
        rs = [res[(n, s)] for s in a.seeds]
        med[n] = {"final": float(np.median([r["final"] for r in rs])),
                  "train_flops": float(np.median([r["train_flops"] for r in rs])), "inf_flops": rs[0]["inf_flops"]}
        seeds = ", ".join(f"{r['final']:.2f}" for r in rs)
        print(f"{n:<14} {med[n]['final']:>22.2f} {seeds:>26} "
              f"{med[n]['train_flops']:>12.3e} {med[n]['inf_flops']:>17.3e}")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for n in names:
        grid = np.linspace(0, a.steps, 100)
        curves = [np.interp(grid, res[(n, s)]["steps"], res[(n, s)]["ret"]) for s in a.seeds]
        ax.plot(grid, np.mean(curves, 0), lw=1.2, label=n)
    ax.axhline(rand, color="grey", ls=":", label="random")
    ax.set_xlabel("env steps")
    ax.set_ylabel(f"return ({a.window}-episode mean, mean of {len(a.seeds)} seeds)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    png = os.path.join(ROOT, "docs", "results", "img", f"{record_id(__file__, sys.argv[1:])}.png")  # the record's
    fig.savefig(png, dpi=100)
    print(f"wrote {png}")
    if {"dense", "mast"} <= set(names):
        retained = (med["mast"]["final"] - rand) / (med["dense"]["final"] - rand)
        ratio = med["dense"]["train_flops"] / med["mast"]["train_flops"]
        rigl = med["rigl"]["final"] if "rigl" in med else float("nan")
        line = (f"RESULT retained={retained:.3f} train_flops_ratio={ratio:.2f} mast_return={med['mast']['final']:.2f} "
                f"rigl_return={rigl:.2f} dense_return={med['dense']['final']:.2f} random_return={rand:.2f}")
        print(line)
        record(__file__, sys.argv[1:], line, seeds=a.seeds,
               per_seed={n: {"final_return": [res[(n, s)]["final"] for s in a.seeds],
                             "train_flops": [res[(n, s)]["train_flops"] for s in a.seeds]} for n in names},
               medians={n: {"final_return": m["final"], "train_flops": m["train_flops"], "inference_flops_per_step":
                            m["inf_flops"]} for n, m in med.items()},
               extra={"random_return": rand, "env_steps": a.steps, "window": a.window,
                      "plot": os.path.relpath(png, ROOT)})


if __name__ == "__main__":
    main()
