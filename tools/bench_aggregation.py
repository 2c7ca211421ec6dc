#!/usr/bin/env python
"""Aggregation benchmark: synchronous AllReduce NIGT vs Rennala NIGT vs Malenia NIGT on simple_spread_v3.

The same task (NIGT policy gradient, 1 learner + N actors, 1 env copy each) and the same wall-clock
budget for every method (``--budget-s``; ``--straggler-budget-s`` for the straggler scenario, where
synchronous rounds take ~10x longer), across actor-speed scenarios made with per-actor delays
(``actors.step_delay_s`` x h_i after every env step):
    equal      h_i = 1
    straggler  one actor 10x slower
    sqrt       h_i = sqrt(i)
and several seeds (by default the held-out evaluation seeds 1000-1002, on which nothing was tuned). With
``--nodes N`` (root) the ranks run round robin on N simulated nodes of the cluster in one box (``tools/cluster.py``,
Open MPI over TCP: the learner on node01, actors on every node), and the straggler scenario slows every actor of the
last node 10x: one node 10x slower, the NIGT paper's heterogeneous setting. Each run is kept in ``--out-dir``
(``<run>.done`` once it finished): the same command reads finished runs again instead of training them
(``--fresh`` trains all again). Trajectory seeds are a function of (seed, actor, round, index in the round), so the
methods see the same environments and action noise where they accept the same trajectories (common
random numbers: with equal speeds the three methods then compute nearly the same thing, and their
comparison is not swamped by seed-to-seed noise). Prints time-to-target (the first time the mean return of the
last ``--window`` trajectories reaches ``--target``) and the final return per method and scenario, writes a PNG of
return vs wall-clock time, and ends with

    RESULT straggler_ratio=… equal_ratio=… sqrt_ratio=… malenia_straggler_ratio=… malenia_equal_ratio=…
        malenia_sqrt_ratio=…

(ratio = median time-to-target of Rennala (or Malenia) / that of synchronous AllReduce NIGT; a run that
never reaches the target counts as the budget, and a ratio computed with such runs is printed with ``<=``
or ``>=`` in the table).

    .venv/bin/python tools/bench_aggregation.py [--seeds 1000,1001,1002] [--budget-s 60] [--straggler-budget-s 200]
        [--actors 4] [--target -70] [--nodes 4]
    .venv/bin/python tools/bench_aggregation.py --scenarios straggler --methods allreduce,rennala  # one scenario
"""
import argparse
import os
import sys

import numpy as np

from _common import EVAL_SEEDS, ROOT, launch, record, record_id, seed_list

SCENARIOS = {"equal": "equal", "straggler": "straggler:10", "sqrt": "sqrt"}
METHODS = ("allreduce", "rennala", "malenia")


def time_to_target(m, target, window_ok):
    ret = m["return_window/agent"]
    hit = np.flatnonzero((ret >= target) & window_ok)
    return float(m["wall_time"][hit[0]]) if len(hit) else float("inf")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=os.path.join(ROOT, "configs", "nigt_spread.yaml"))
    ap.add_argument("--seeds", type=seed_list, default=list(EVAL_SEEDS),
                    help="comma-separated seeds (default: the held-out evaluation seeds)")
    ap.add_argument("--nodes", type=int, default=0,
                    help="run on this many simulated nodes (tools/cluster.py; root); 0: on this host")
    ap.add_argument("--state", default="/var/tmp/hpcmarl-aggregation-cluster", help="the cluster's state directory")
    ap.add_argument("--fresh", action="store_true", help="train every run again (else finished runs are reused)")
    ap.add_argument("--budget-s", type=float, default=60.0, help="wall-clock budget of every run")
    ap.add_argument("--straggler-budget-s", type=float, default=200.0,
                    help="budget of the straggler scenario (synchronous NIGT needs ~10x longer per round there)")
    ap.add_argument("--actors", type=int, default=4)
    ap.add_argument("--step-delay", type=float, default=0.001, help="seconds per env step at h = 1")
    ap.add_argument("--target", type=float, default=-70.0)
    ap.add_argument("--window", type=int, default=200, help="trajectories in the return average")
    ap.add_argument("--scenarios", default="equal,straggler,sqrt")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--out-dir", default=os.path.join(ROOT, "runs", "bench_aggregation"))
    ap.add_argument("--plot", default=None,
                    help="PNG path (default: docs/results/img/<record>.png, shown with the record on its page)")
    ap.add_argument("overrides", nargs="*", help="extra key=value config overrides for every run")
    a = ap.parse_args()
    scenarios = a.scenarios.split(",")
    methods = a.methods.split(",")
    for s in scenarios:
        if s not in SCENARIOS:
            raise SystemExit(f"unknown scenario {s!r} (known: {', '.join(SCENARIOS)})")
    for m in methods:
        if m not in METHODS:
            raise SystemExit(f"unknown method {m!r} (known: {', '.join(METHODS)})")
    if a.nodes < 0 or a.nodes == 1:
        raise SystemExit("--nodes: 0 (this host) or at least 2 simulated nodes")
    if a.nodes:
        a.out_dir = os.path.join(a.out_dir, f"{a.nodes}-nodes")
    os.makedirs(a.out_dir, exist_ok=True)
    seeds = a.seeds
    n_runs = len(scenarios) * len(methods) * len(seeds)
    budget = {s: a.straggler_budget_s if s == "straggler" else a.budget_s for s in scenarios}
    print(f"{n_runs} runs of {', '.join(f'{budget[s]:.0f}s ({s})' for s in scenarios)}: NIGT on simple_spread_v3, "
          f"1 learner + {a.actors} actors" + (f" round robin on {a.nodes} simulated nodes" if a.nodes else "") + ", "
          f"step delay {a.step_delay * 1e3:.1f} ms x h_i, target {a.target} ({a.window}-trajectory mean); "
          f"logs in {a.out_dir}", flush=True)

    from hpcmarl.storage import Run

    delay = dict(SCENARIOS)
    if a.nodes:  # rank r on node r % N; actor i is rank i + 1: the straggler is every actor of the last node
        delay["straggler"] = "[" + ",".join("10" if (i + 1) % a.nodes == a.nodes - 1 else "1"
                                            for i in range(a.actors)) + "]"
    cluster = None
    curves, ttt, final = {}, {}, {}
    k = 0
    try:
        for s in scenarios:
            for m in methods:
                for seed in seeds:
                    k += 1
                    run = os.path.join(a.out_dir, f"{s}-{m}-seed{seed}")
                    if a.fresh or not os.path.exists(run + ".done"):
                        if a.nodes and cluster is None:
                            cluster = start_cluster(a)
                        launch(1 + a.actors, a.config,
                               [f"run_dir={run}", "fresh=true", f"seed={seed}", f"algo.aggregation={m}",
                                f"actors.delay={delay[s]}", f"actors.step_delay_s={a.step_delay}",
                                f"train.max_wall_s={budget[s]}", "train.total_env_steps=1000000000",
                                f"output.episode_window={a.window}", "output.progress_s=30", "learner.backend=mpi",
                                "output.checkpoint_every=100000"] + a.overrides,
                               timeout=budget[s] + 600, log_path=run + ".log", cluster=cluster, nodes=a.nodes)
                        open(run + ".done", "w").close()
                    met = Run(run).metrics()
                    ok = np.cumsum(met["grads/accepted"]) >= a.window
                    ttt[s, m, seed] = time_to_target(met, a.target, ok)
                    final[s, m, seed] = float(met["return_window/agent"][-1])
                    curves[s, m, seed] = (met["wall_time"], met["return_window/agent"])
                    t = ttt[s, m, seed]
                    print(f"[{k}/{n_runs}] {s:<9} {m:<9} seed {seed}: time-to-target "
                          f"{'not reached' if np.isinf(t) else f'{t:.1f}s'}, final return {final[s, m, seed]:.2f}, "
                          f"{int(met['round'][-1]) + 1} rounds", flush=True)
    finally:
        if cluster is not None:
            cluster.stop()

    def median_ttt(s, m):
        v = np.array([ttt[s, m, i] for i in seeds])
        return float(np.median(np.where(np.isinf(v), budget[s], v))), int(np.isinf(v).sum())

    print(f"\n{'scenario':<10} {'method':<10} {'time-to-target (median)':>24} {'final return (median)':>22}")
    for s in scenarios:
        for m in methods:
            med, miss = median_ttt(s, m)
            note = f" ({miss}/{len(seeds)} missed)" if miss else ""
            fin = np.median([final[s, m, i] for i in seeds])
            print(f"{s:<10} {m:<10} {('>=' if miss > len(seeds) // 2 else '') + f'{med:.1f}s' + note:>24} {fin:>22.2f}")
    ratios = {}
    for s in scenarios:
        base, base_miss = median_ttt(s, "allreduce") if "allreduce" in methods else (float("nan"), 0)
        for m in ("rennala", "malenia"):
            if m in methods:
                med, miss = median_ttt(s, m)
                r = med / base
                bound = ("<=" if base_miss > len(seeds) // 2 and not miss
                         else (">=" if miss > len(seeds) // 2 and not base_miss else ""))
                ratios[(m, s)] = r
                print(f"{m} / allreduce time-to-target, {s}: {bound}{r:.2f}")

    args = sys.argv[1:]
    plot = a.plot or os.path.join(ROOT, "docs", "results", "img", f"{record_id(__file__, args)}.png")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(scenarios), figsize=(5 * len(scenarios), 4), sharey=True, squeeze=False)
    colors = {"allreduce": "tab:gray", "rennala": "tab:blue", "malenia": "tab:orange"}
    for ax, s in zip(axes[0], scenarios):
        for m in methods:
            for seed in seeds:
                t, r = curves[s, m, seed]
                ax.plot(t, r, color=colors[m], alpha=0.8, lw=1, label=m if seed == seeds[0] else None)
        ax.axhline(a.target, color="k", ls=":", lw=1)
        ax.set_title(f"{s} ({SCENARIOS[s]})")
        ax.set_xlabel("wall-clock time (s)")
    axes[0][0].set_ylabel(f"return ({a.window}-trajectory mean)")
    axes[0][0].legend()
    fig.tight_layout()
    fig.savefig(plot, dpi=100)
    print(f"wrote {plot}")
    fmt = lambda key: f"{ratios[key]:.3f}" if key in ratios else "nan"
    scen = ("straggler", "equal", "sqrt")
    line = "RESULT " + " ".join([f"{s}_ratio={fmt(('rennala', s))}" for s in scen]
                                + [f"malenia_{s}_ratio={fmt(('malenia', s))}" for s in scen])
    print(line)
    # time to target null: not reached within the budget
    record(__file__, args, line, seeds=seeds,
           per_seed={f"{s}/{m}": {"time_to_target_s": [ttt[s, m, i] for i in seeds],
                                  "final_return": [final[s, m, i] for i in seeds]} for s in scenarios for m in methods},
           medians={f"{s}/{m}": {"time_to_target_s": median_ttt(s, m)[0], "missed": median_ttt(s, m)[1],
                                 "final_return": float(np.median([final[s, m, i] for i in seeds]))}
                    for s in scenarios for m in methods},
           extra={"target": a.target, "budget_s": budget, "nodes": a.nodes or 1, "plot": os.path.relpath(plot, ROOT),
                  "straggler_delay": delay.get("straggler")})


def start_cluster(a):
    """The cluster in one box with ``a.nodes`` nodes (what an interrupted invocation left is removed first)."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import cluster as cluster_tool

    return cluster_tool.Cluster.started(a.state, a.nodes, "10.213.53.0/24", "hag")


if __name__ == "__main__":
    main()
