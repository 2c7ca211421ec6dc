#!/usr/bin/env python
"""Scaling across nodes: env steps/s of every flow on 1 to 8 simulated nodes, measured and predicted.

Runs on the cluster in one box (``tools/cluster.py``: one network, UTS and mount namespace per node, Open MPI over
TCP between nodes, shared memory within one; needs root). This machine has 2 cores for all the nodes together, so
the costs that matter are injected and dominate the real ones: every env step sleeps ``actors.step_delay_s`` and
every update ``learner.update_delay_s``, chosen as ``--factor`` x the real costs measured first (printed). What is
measured is then what hpcmarl adds across nodes: messages over TCP, waits, all-reduces, NIGT's round counter. A
number from this tool says how the runtime scales when compute dominates; it is not a cluster's speed.

Learners all-reduce with ``learner.backend=mpi`` (Horovod's background thread spins while it waits, which on 2
shared cores starves the ranks it waits for). Placement: ranks round robin over the nodes (``mpirun --map-by node``,
``srun --distribution=cyclic``), so with N learners on N nodes each node holds one learner and ``--actors-per-node``
actors, every actor on its learner's node, and the learners all-reduce (or, NIGT, count gradients at learner 0) across
nodes.

Modes (``--modes``):
    weak       fixed work per node: N nodes each with a learner and --actors-per-node actors; NIGT's batch
               M = --grads-per-actor x actors. Efficiency = sps(N) / (N sps(1)).
    strong     fixed total work: --copies env copies in all (each actor gets copies / actors, its step's injected
               cost grows with its copies; each learner's injected update cost shrinks with its share of the
               unrolls); NIGT's M fixed at --grads-per-actor x --actors-per-node x the largest N (its runs on N
               nodes last max(1, N_max / 2N) x --train-seconds, so that each makes enough rounds). Efficiency =
               sps(N) / (N sps(1)).
    straggler  NIGT's three rules on --straggler-nodes nodes, every node equal and then the last node --slow times
               slower (its actors' factor h_i in ``actors.delay``): gradients accepted per second and rounds per
               second.
    caps       every flow on --cap-nodes nodes as in the weak mode, with every node's link uncapped and then capped
               at each of --caps in both directions (``tc tbf``): env steps/s capped / uncapped, and the bytes a
               learner takes in per second uncapped (what a cap must carry).

Every point is also predicted by the sizing model (``hpcmarl validate --predict --distribution cyclic``: the
profile measured here, the same injected costs, this machine's cores shared by the nodes). Runs are kept in
``--out`` and reused when their run ended (unless ``--fresh``): the same command resumes an interrupted invocation.
Draws the efficiency curves (``docs/results/img/<record>.png``, shown with the record)
and writes a record; last line

    RESULT weak_eff_8_min=… weak_eff_8_<flow>=… strong_eff_8_<flow>=… straggler_<rule>_per_s=…
        cap_<rate>_<flow>=… max_pred_err=… within_15pct=k/n

    sudo .venv/bin/python tools/bench_scaling.py [--nodes 1 2 4 8] [--modes weak strong straggler caps]
        [--flows mappo matrace nigt-allreduce nigt-rennala nigt-malenia] [--factor 20] [--train-seconds 40]
"""
import argparse
import json
import os
import sys

import numpy as np
from scale_model import injected_delays, measured_sps, round_up

from _common import ROOT, launch, record, record_id

FLOWS = {  # name: (config, overrides)
    "mappo": ("simple_spread_mappo.yaml", ["env.num_envs=4", "algo.epochs=4", "algo.minibatches=2"]),
    "matrace": ("matrace_spread.yaml", ["env.num_envs=4"]),
    "nigt-allreduce": ("nigt_spread.yaml", ["algo.aggregation=allreduce"]),
    "nigt-rennala": ("nigt_spread.yaml", ["algo.aggregation=rennala"]),
    "nigt-malenia": ("nigt_spread.yaml", ["algo.aggregation=malenia"]),
}
# learner.backend=mpi: Horovod's collectives run in its background thread, which spins in MPI while it waits; with 24
# ranks on this machine's 2 cores that starves the ranks it waits for (MAPPO on 4 nodes: 141 env steps/s with Horovod,
# 618 with the mpi backend, whose learners test a non-blocking all-reduce with 0.2 ms sleeps in between)
COMMON = ["learner.backend=mpi", "output.trajectories=false", "train.total_env_steps=1000000000",
          "output.checkpoint_every=100000", "output.progress_s=30", "runtime.timeout_s=120"]


def nigt(flow):
    return flow.startswith("nigt")


def train(run, np_, path, overrides, seconds, cluster, nodes, reuse):
    """Train into ``run`` across the first ``nodes`` nodes, unless ``reuse`` and a run there ended (``run.done``)."""
    if reuse and os.path.exists(run + ".done"):
        return
    launch(np_, path, overrides + COMMON + [f"run_dir={run}", "--fresh", f"train.max_wall_s={seconds}"],
           timeout=seconds + 400, log_path=run + ".log", cluster=cluster, nodes=nodes)
    open(run + ".done", "w").close()


class Bench:
    def __init__(self, a, cluster):
        self.a, self.c = a, cluster
        self.cores = os.cpu_count() or 1
        self.delays = {}  # flow -> (step_delay_s, update_delay_s), the weak mode's (one learner's share)
        self.profiles = {}  # flow -> node profile (rollout flows)

    # -- costs ---------------------------------------------------------------------------------------------
    def config(self, flow):
        name, over = FLOWS[flow]
        return os.path.join(ROOT, "configs", name), over + list(self.a.overrides)

    def injected(self, flow):
        """``(step_delay_s, update_delay_s)``: --factor x the real costs of an env step and of one learner's update
        (its --actors-per-node unrolls, with its all-reduces)."""
        if flow in self.delays:
            return self.delays[flow]
        from hpcmarl.config import load_config
        from hpcmarl.sizing import Profile, measure

        path, over = self.config(flow)
        saved = os.path.join(self.a.out, f"{flow}.costs.json")  # what the runs kept in --out were made with
        if not self.a.fresh and os.path.exists(saved):
            with open(saved) as f:
                self.delays[flow] = tuple(json.load(f))
            prof = saved.replace(".costs.json", ".profile.json")
            self.profiles[flow] = Profile.load(prof) if os.path.exists(prof) else self.profile(flow)
            print(f"{flow}: the injected costs of the runs in {self.a.out}: actors.step_delay_s="
                  f"{self.delays[flow][0]:g} learner.update_delay_s={self.delays[flow][1]:g}", flush=True)
            return self.delays[flow]
        if nigt(flow):  # the injected cost from a short run of one node without delays
            step = self.calibrate_nigt(flow)
            self.delays[flow] = (round_up(self.a.factor * step), 0.0)
            print(f"{flow}: real cost {step * 1e3:.2f} ms per env step (one node, no delays); injected "
                  f"x{self.a.factor:g}: actors.step_delay_s={self.delays[flow][0]:g}", flush=True)
            self.profiles[flow] = self.profile(flow)
        else:
            prof = measure(load_config(path, over), unrolls=self.a.unrolls)
            self.profiles[flow] = prof
            self.delays[flow] = injected_delays(prof, self.a.factor, [(2, 2 * self.a.actors_per_node)])
            prof.save(saved.replace(".costs.json", ".profile.json"))
        with open(saved, "w") as f:
            json.dump(list(self.delays[flow]), f)
        return self.delays[flow]

    def profile(self, flow):
        """The gradient flow's node profile (the sizing model's), saved beside the runs."""
        from hpcmarl.config import load_config
        from hpcmarl.sizing import measure

        path, over = self.config(flow)
        prof = measure(load_config(path, over), unrolls=self.a.unrolls)
        prof.save(os.path.join(self.a.out, f"{flow}.profile.json"))
        return prof

    def calibrate_nigt(self, flow):
        """Seconds of real work per env step of one NIGT actor: one node (a learner and --actors-per-node actors,
        no delays) for 30 s; each actor has about one of this machine's cores when there are as many actors."""
        A = self.a.actors_per_node
        run = os.path.join(self.a.out, f"{flow}-calibrate")
        path, over = self.config(flow)
        M = self.a.grads_per_actor * A
        train(run, 1 + A, path, over + [f"algo.batch={M}", f"algo.init_batch={M}"], 30, self.c, 1, not self.a.fresh)
        sps, _ = measured_sps(run, self.a.skip)
        return A / sps * min(1.0, self.cores / (A + 1))

    # -- one point -----------------------------------------------------------------------------------------
    def point(self, mode, flow, nodes, tag="", delay=None):
        """Train ``flow`` on ``nodes`` nodes in ``mode``; returns (measured env steps/s, the run directory,
        predicted env steps/s or None)."""
        a = self.a
        A, L = a.actors_per_node * nodes, nodes
        step_s, update_s = self.injected(flow)
        path, over = self.config(flow)
        extra = [f"topology.learners={L}"]
        copies = None
        if nigt(flow):
            M = a.grads_per_actor * (a.actors_per_node * max(a.nodes) if mode == "strong" else A)
            extra += [f"algo.batch={M}", f"algo.init_batch={M}"]
        elif mode == "strong":  # --copies in all; costs per copy as in the weak mode's 4 copies per actor
            copies = max(1, a.copies // A)
            per = copies / 4.0
            step_s, update_s = round_up(step_s * per), round_up(update_s * (a.copies / L) / (4 * a.actors_per_node))
            extra += [f"env.num_envs={copies}"]
        if delay:
            extra += [f"actors.delay={delay}"]
        extra += [f"actors.step_delay_s={step_s:g}", f"learner.update_delay_s={update_s:g}"]
        run = os.path.join(a.out, f"{mode}-{flow}-{nodes}n{tag}")
        seconds = a.straggler_seconds if mode == "straggler" else a.train_seconds
        if mode == "strong" and nigt(flow):  # M fixed: one node's rounds take N_max / N times longer
            seconds = max(seconds, a.train_seconds * max(a.nodes) / nodes / 2)
        train(run, L + A, path, over + extra, seconds, self.c, nodes, not a.fresh)
        sps, _ = measured_sps(run, a.skip)
        pred = None
        if flow in self.profiles:
            from dataclasses import replace

            from hpcmarl.sizing import Machine, predict

            prof = self.profiles[flow].with_delays(step_s, update_s, json.loads(delay) if delay else None)
            if nigt(flow):
                prof = replace(prof, batch=M)
            m = Machine(cores_per_node=self.cores / nodes, ranks_per_node=1 + a.actors_per_node, placement="cyclic")
            pred = predict(prof, m, A, L, num_envs=copies).env_steps_per_s
        print(f"  {mode:<9} {flow:<15} {nodes} node(s) {L}x{A}{tag}: {sps:,.0f} env steps/s"
              + (f", predicted {pred:,.0f} ({pred / sps - 1:+.1%})" if pred else ""), flush=True)
        return sps, run, pred


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", nargs="+", type=int, default=[1, 2, 4, 8])
    ap.add_argument("--modes", nargs="+", default=["weak", "strong", "straggler"],
                    choices=["weak", "strong", "straggler", "caps"])
    ap.add_argument("--cap-nodes", type=int, default=4, help="caps mode: nodes")
    ap.add_argument("--caps", nargs="+", default=["1gbit", "100mbit"], help="caps mode: link rates (tc syntax)")
    ap.add_argument("--flows", nargs="+", default=list(FLOWS), choices=list(FLOWS))
    ap.add_argument("--actors-per-node", type=int, default=2)
    ap.add_argument("--factor", type=float, default=20.0, help="injected costs: this many times the real ones")
    ap.add_argument("--copies", type=int, default=16, help="strong mode: env copies in all (rollout flows)")
    ap.add_argument("--grads-per-actor", type=int, default=4, help="NIGT: M = this x actors (weak)")
    ap.add_argument("--straggler-nodes", type=int, default=4)
    ap.add_argument("--slow", type=float, default=10.0, help="straggler mode: the slow node's factor")
    ap.add_argument("--train-seconds", type=float, default=40.0, help="weak and strong modes: seconds per run")
    ap.add_argument("--straggler-seconds", type=float, default=120.0, help="straggler mode: seconds per run")
    ap.add_argument("--skip", type=int, default=3, help="updates left out at the start (warm-up)")
    ap.add_argument("--unrolls", type=int, default=12, help="unrolls timed for each node profile")
    ap.add_argument("--out", default=os.path.join(ROOT, "runs", "bench_scaling"),
                    help="runs kept here (shared storage: not under /tmp, which each node has to itself)")
    ap.add_argument("--fresh", action="store_true",
                    help="train every run again (default: reuse the runs in --out that ended, so the same command "
                         "resumes an interrupted invocation)")
    ap.add_argument("--plot", default=None,
                    help="PNG path (default: docs/results/img/<record>.png, shown with the record on its page)")
    ap.add_argument("--state", default="/var/tmp/hpcmarl-bench-cluster", help="the cluster's state directory")
    ap.add_argument("overrides", nargs="*", help="key=value overrides for every run")
    a = ap.parse_args()
    if a.nodes[0] != 1 or sorted(a.nodes) != a.nodes:
        raise SystemExit("--nodes must start at 1 and increase (efficiency is against one node)")
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import cluster as cluster_tool
    import torch

    torch.set_num_threads(1)
    os.makedirs(a.out, exist_ok=True)
    n_max = max(max(a.nodes), a.straggler_nodes, a.cap_nodes if "caps" in a.modes else 1)
    c = cluster_tool.Cluster.started(a.state, n_max, "10.213.49.0/24", "hbs")
    try:
        result, rows, curves, errs = run_modes(a, Bench(a, c))
    finally:
        c.stop()
    finish(a, result, rows, curves, errs)


def run_modes(a, b):
    from hpcmarl.storage import Run

    result, rows, curves, errs = {}, [], {}, []
    for mode in [m for m in a.modes if m in ("weak", "strong")]:
        for flow in a.flows:
            base = None
            for n in a.nodes:
                sps, _, pred = b.point(mode, flow, n)
                base = base or sps
                eff = sps / (n * base)
                err = pred / sps - 1 if pred else None
                if err is not None and n > 1:
                    errs.append(abs(err))
                rows.append([mode, flow, n, a.actors_per_node * n, sps, eff, pred, err])
                curves.setdefault(mode, {}).setdefault(flow, []).append((n, eff))
            result[f"{mode}_eff_{a.nodes[-1]}_{flow.replace('-', '_')}"] = round(eff, 3)
    if "straggler" in a.modes:
        N, A = a.straggler_nodes, a.actors_per_node * a.straggler_nodes
        slow_node = N - 1  # actor i sits on node (L + i) mod N with L = N learners: i mod N
        h = [a.slow if i % N == slow_node else 1 for i in range(A)]
        for flow in [f for f in a.flows if nigt(f)]:
            for label, delay in (("equal", None), (f"node x{a.slow:g}", "[" + ",".join(f"{x:g}" for x in h) + "]")):
                try:
                    sps, run, _ = b.point("straggler", flow, N, tag="" if delay is None else "-slow", delay=delay)
                except SystemExit as e:  # a run that ended with an error is a result here, not the end of the bench
                    why = next((ln for ln in str(e).splitlines() if ln.startswith("hpcmarl: ")), str(e)[:200])
                    print(f"    {flow} {label}: FAILED: {why}", flush=True)
                    rows.append(["straggler " + label, flow, N, A, None, None, None, None])
                    result[f"straggler_{flow.split('-')[1]}_per_s"] = "failed"
                    curves.setdefault("failed", {})[flow, label] = why
                    continue
                met = Run(run).metrics()
                rounds = np.asarray(met["round"], float)
                wall = np.asarray(met["wall_time"], float)
                acc = np.cumsum(np.asarray(met["grads/accepted"], float))
                i = a.skip
                gps, rps = (acc[-1] - acc[i]) / (wall[-1] - wall[i]), (rounds[-1] - rounds[i]) / (wall[-1] - wall[i])
                rows.append(["straggler " + label, flow, N, A, sps, None, None, None])
                curves.setdefault("straggler", {})[flow, label] = (gps, rps)
                if delay:
                    result[f"straggler_{flow.split('-')[1]}_per_s"] = round(gps, 2)
                print(f"    {flow} {label}: {gps:.1f} gradients accepted/s, {rps:.2f} rounds/s", flush=True)
    if "caps" in a.modes:
        run_caps(a, b, result, rows, curves)
    return result, rows, curves, errs


def run_caps(a, b, result, rows, curves):
    """The caps mode: each flow on --cap-nodes nodes, links uncapped, then capped at each of --caps."""
    from hpcmarl.storage import Run

    N, A = a.cap_nodes, a.actors_per_node * a.cap_nodes
    nodes = b.c.names[:N]
    for flow in a.flows:
        base = None
        for cap in ["none"] + list(a.caps):
            for node in nodes:
                b.c.cap(node, "0" if cap == "none" else cap)
            before = into_nodes(b.c, nodes)
            try:
                sps, run, _ = b.point("caps", flow, N, tag="" if cap == "none" else f"-{cap}")
            finally:
                for node in nodes:
                    b.c.cap(node, "0")
            if base is None:
                base = sps
                ingress = (into_nodes(b.c, nodes) - before) / float(Run(run).metrics()["wall_time"][-1]) / N
                curves.setdefault("ingress", {})[flow] = ingress
                print(f"    {flow}: {ingress / 1e6:.2f} MB/s into each node uncapped ({ingress * 8 / 1e6:.1f} Mbit/s)",
                      flush=True)
            rows.append([f"caps {cap}", flow, N, A, sps, sps / base, None, None])
            curves.setdefault("caps", {})[flow, cap] = sps / base
            if cap != "none":
                result[f"cap_{cap}_{flow.replace('-', '_')}"] = round(sps / base, 3)


def into_nodes(c, nodes) -> int:
    """Bytes sent into ``nodes`` so far (the bridge side of each node's link: what it transmits, the node receives)."""
    total = 0
    for node in nodes:
        with open(f"/sys/class/net/{c.veth(node)}/statistics/tx_bytes") as f:
            total += int(f.read())
    return total


def finish(a, result, rows, curves, errs):
    weak = [v for k, v in result.items() if k.startswith("weak_eff_")]
    if weak:
        result = {f"weak_eff_{a.nodes[-1]}_min": min(weak), **result}
    if errs:
        result["max_pred_err"] = round(max(errs), 3)
        result["within_15pct"] = f"{sum(e <= 0.15 for e in errs)}/{len(errs)}"
    print("\n| mode | flow | nodes | actors | env steps/s | efficiency | predicted | error |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for mode, flow, n, A, sps, eff, pred, err in rows:
        print(f"| {mode} | {flow} | {n} | {A} | {'failed' if sps is None else f'{sps:,.0f}'} | "
              f"{'' if eff is None else f'{eff:.2f}'} | {'' if pred is None else f'{pred:,.0f}'} | "
              f"{'' if err is None else f'{err:+.1%}'} |")
    args = sys.argv[1:]
    plot = a.plot or os.path.join(ROOT, "docs", "results", "img", f"{record_id(__file__, args)}.png")
    plot = draw(plot, a, curves)
    line = "RESULT " + " ".join(f"{k}={v}" for k, v in result.items())
    print(line)
    failed = {f"{flow} ({label})": why for (flow, label), why in curves.get("failed", {}).items()}
    stragglers = {f"{flow} ({label})": {"gradients accepted/s": g, "rounds/s": r}
                  for (flow, label), (g, r) in curves.get("straggler", {}).items()}
    record(__file__, args, line, extra={"factor": a.factor, "actors_per_node": a.actors_per_node,
                                                "failed": failed, "straggler": stragglers,
                                                "bytes_per_s_into_each_node_uncapped": curves.get("ingress"),
                                                "plot": plot and os.path.relpath(plot, ROOT), "tables": {"points": {
        "columns": ["mode", "flow", "nodes", "actors", "env steps/s", "efficiency", "predicted env steps/s",
                    "prediction error"], "rows": rows}}})


def draw(path, a, curves):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = [m for m in ("weak", "strong", "straggler", "caps") if m in curves]
    if not modes:
        return None
    fig, axes = plt.subplots(1, len(modes), figsize=(5 * len(modes), 4), squeeze=False)
    for ax, mode in zip(axes[0], modes):
        if mode == "caps":  # env steps/s capped / uncapped, per flow and cap
            pts = curves[mode]
            flows = [f for f in FLOWS if any(k[0] == f for k in pts)]
            caps = [c for c in ["none"] + list(a.caps) if any(k[1] == c for k in pts)][1:]
            for j, cap in enumerate(caps):
                ax.bar([i + 0.8 / len(caps) * j for i in range(len(flows))], [pts.get((f, cap), 0) for f in flows],
                       width=0.8 / len(caps), label=f"links at {cap}")
            ax.set_xticks(range(len(flows)), flows, fontsize=8)
            ax.axhline(1.0, color="k", ls=":", lw=1)
            ax.set_title(f"{a.cap_nodes} nodes, every link capped (tc tbf)")
            ax.set_ylabel("env steps/s, capped / uncapped")
            ax.legend(fontsize=8)
            continue
        if mode == "straggler":  # gradients accepted per second, every node equal vs one node slower
            pts = curves[mode]
            flows = sorted({f for f, _ in pts}, key=list(FLOWS).index)
            labels = sorted({lab for _, lab in pts}, key=lambda lab: lab != "equal")
            for j, lab in enumerate(labels):
                ax.bar([i + 0.4 * j for i in range(len(flows))], [pts.get((f, lab), (0, 0))[0] for f in flows],
                       width=0.4, label=lab)
            ax.set_xticks([i + 0.2 for i in range(len(flows))], flows, fontsize=8)
            ax.set_title(f"NIGT on {a.straggler_nodes} nodes, the last one x{a.slow:g} slower")
            ax.set_ylabel("gradients accepted / s")
            ax.legend(fontsize=8)
            continue
        for flow, pts in curves[mode].items():
            n, eff = zip(*pts)
            ax.plot(n, eff, marker="o", label=flow)
        ax.axhline(0.9, color="k", ls=":", lw=1)
        ax.set_xscale("log", base=2)
        ax.set_xticks(a.nodes, [str(n) for n in a.nodes])
        ax.set_ylim(0, 1.2)
        ax.set_title(f"{mode} scaling ({a.actors_per_node} actors + 1 learner per node)")
        ax.set_xlabel("simulated nodes")
        ax.set_ylabel("efficiency: sps(N) / (N sps(1))")
        ax.legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main()
