#!/usr/bin/env python
"""The sizing model (hpcmarl/sizing/) checked against runs measured on this machine, and its predictions
for a large job.

For each config (the synchronous flow: MAPPO; the asynchronous flow: MA-Trace) and each layout it measures this node's
costs (one actor and one learner in this process, ``hpcmarl.sizing.measure``), then trains the layout of
``--layouts`` (learners x actors, 2-8 ranks) for ``--train-seconds`` under mpirun, reads the env steps/s between the
``--skip``-th and the last update from run.h5, and
compares it with the model's prediction for the same layout on this node (its cores). Prints a table, then the
model's prediction for ``--large`` (e.g. 1,024 actors / 16 learners on 64 nodes of 16 cores). Last line:
``RESULT max_err=… mean_err=… within_20pct=k/n max_drift=… mean_drift=…`` (relative error of predicted vs measured
env steps/s; drift: how much the prediction moves when the node is profiled again right after the run, the noise
floor of the check on a machine whose speed drifts).

Run it on an otherwise idle machine (never beside another benchmark):

    .venv/bin/python tools/scale_model.py [--configs simple_spread_mappo.yaml matrace_spread.yaml]
        [--layouts 1x1 1x2 1x3 2x2 2x4 2x6] [--train-seconds 40] [--large 16x1024@16:16]
"""
import argparse
import os
import sys
import tempfile

import numpy as np

from _common import ROOT, launch, record


def parse_layout(text):
    learners, actors = text.split("x")
    return int(learners), int(actors)


def measured_sps(run_dir, skip):
    from hpcmarl.storage import Run

    m = Run(run_dir).metrics()
    steps, wall = np.asarray(m["env_steps"], float), np.asarray(m["wall_time"], float)
    if len(steps) <= skip + 2:
        raise SystemExit(f"{run_dir}: only {len(steps)} updates; train longer (--train-seconds)")
    i = skip
    return (steps[-1] - steps[i]) / (wall[-1] - wall[i]), {
        k: float(np.nanmean(m[k][i:])) for k in ("time/update", "time/allreduce", "time/collect", "lag_mean")
        if k in m and len(m[k])}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", nargs="+", default=["simple_spread_mappo.yaml", "matrace_spread.yaml"])
    ap.add_argument("--layouts", nargs="+", default=["1x1", "1x2", "1x3", "2x2", "2x4", "2x6"],
                    help="LEARNERSxACTORS")
    ap.add_argument("--train-seconds", type=float, default=40.0)
    ap.add_argument("--unrolls", type=int, default=24, help="unrolls timed for each node profile")
    ap.add_argument("--skip", type=int, default=5, help="updates left out at the start (warm-up)")
    ap.add_argument("--large", default="16x1024@16:16", help="LxA@RANKS_PER_NODE:CORES_PER_NODE to predict")
    ap.add_argument("--out", default=None, help="keep the runs here (default: a temporary directory)")
    ap.add_argument("--reuse", action="store_true",
                    help="read the runs (and the node profiles measured before them) already in --out instead of "
                         "measuring again")
    ap.add_argument("overrides", nargs="*", help="key=value overrides for every config")
    a = ap.parse_args()

    import torch

    from hpcmarl.config import load_config
    from hpcmarl.sizing import Machine, Profile, measure, predict

    torch.set_num_threads(1)
    cores = os.cpu_count() or 1
    out = a.out or tempfile.mkdtemp(prefix="scale_model_")
    os.makedirs(out, exist_ok=True)
    rows, errs, drifts = [], [], []
    for config in a.configs:
        path = os.path.join(ROOT, "configs", config)
        cfg = load_config(path, list(a.overrides))
        for text in a.layouts:
            L, A = parse_layout(text)
            run_dir = os.path.join(out, f"{os.path.splitext(config)[0]}-{text}")

            def profile(when):  # measured right before and right after the run (kept beside it for --reuse)
                saved = f"{run_dir}.profile-{when}.json"
                if a.reuse and os.path.exists(saved):
                    return Profile.load(saved)
                p = measure(cfg, unrolls=a.unrolls)
                p.save(saved)
                return p

            prof = profile("before")
            print(f"{config} {text}: {prof.flow} flow; unroll {prof.steps_per_unroll} steps "
                  f"{prof.collect_s * 1e3:.1f} ms (cv {prof.collect_cv:.2f}); update {prof.update_fixed_s * 1e3:.1f} + "
                  f"{prof.update_per_unroll_s * 1e3:.1f} ms/unroll, {prof.grad_steps} gradient steps; every core busy: "
                  f"{prof.busy_slowdown:.2f}x slower; a waiting rank {prof.wait_load:.0%} of a core", flush=True)
            if not (a.reuse and os.path.exists(os.path.join(run_dir, "run.h5"))):
                launch(L + A, path, [f"run_dir={run_dir}", f"topology.learners={L}",
                                     f"train.max_wall_s={a.train_seconds}", "train.total_env_steps=1000000000",
                                     "output.trajectories=false", "--fresh"]
                       + list(a.overrides), timeout=a.train_seconds + 300, log_path=run_dir + ".log")
            # this machine's speed drifts (a shared VM: 10-40% within minutes): the prediction from a profile
            # measured after the run shows how far the node itself moved while it ran
            after = predict(profile("after"), Machine(cores_per_node=cores), A, L).env_steps_per_s
            got, phases = measured_sps(run_dir, a.skip)
            pred = predict(prof, Machine(cores_per_node=cores), A, L)
            err, drift = pred.env_steps_per_s / got - 1, after / pred.env_steps_per_s - 1
            errs.append(err)
            drifts.append(drift)
            rows.append((config, text, got, pred.env_steps_per_s, err, drift, pred.lag_mean,
                         phases.get("lag_mean", 0.0), pred.bottleneck.split(" (")[0]))
            print(f"  measured {got:,.0f} env steps/s, predicted {pred.env_steps_per_s:,.0f} ({err:+.1%}; "
                  f"from the profile after the run {drift:+.1%} more); "
                  f"lag {phases.get('lag_mean', 0.0):.2f} vs {pred.lag_mean:.2f}; measured update "
                  f"{phases.get('time/update', 0) * 1e3:.1f} ms, "
                  f"all-reduce {phases.get('time/allreduce', 0) * 1e3:.1f} ms",
                  flush=True)
        if a.large:
            spec, _, node = a.large.partition("@")
            L, A = parse_layout(spec)
            rpn, _, cpn = node.partition(":")
            m = Machine(cores_per_node=int(cpn or rpn or cores), ranks_per_node=int(rpn or 0))
            print(f"  large job {L} learners x {A} actors, {m.ranks_per_node or L + A} ranks per node, "
                  f"{m.cores_per_node} cores per node:")
            print("    " + predict(prof, m, A, L).describe().replace("\n", "\n    "), flush=True)
    print(f"\nenv steps/s on this machine ({cores} cores), measured vs predicted")
    print("| config | learners x actors | measured | predicted | error | drift | lag measured | lag predicted "
          "| bottleneck |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---|")
    for c, t, got, p, e, d, lp, lm, b in rows:
        print(f"| {c} | {t} | {got:,.0f} | {p:,.0f} | {e:+.1%} | {d:+.1%} | {lm:.2f} | {lp:.2f} | {b} |")
    print("(drift: the prediction from the node profile measured after the run, relative to the one before it)")
    errs, drifts = np.abs(errs), np.abs(drifts)
    line = (f"RESULT max_err={errs.max():.3f} mean_err={errs.mean():.3f} "
            f"within_20pct={int((errs <= 0.2).sum())}/{len(errs)} "
            f"max_drift={drifts.max():.3f} mean_drift={drifts.mean():.3f}")
    print(line)
    record(__file__, sys.argv[1:], line, extra={"cores": cores, "tables": {"layouts": {
        "columns": ["config", "learners x actors", "measured env steps/s", "predicted env steps/s", "error", "drift",
                    "lag predicted", "lag measured", "bottleneck"], "rows": [list(r) for r in rows]}}})
    if not a.out:
        print(f"(runs in {out})", file=sys.stderr)


if __name__ == "__main__":
    main()
