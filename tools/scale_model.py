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

``--injected F``: the check independent of this machine's speed (which moves more than the tolerance worth
checking). Per config it first profiles the real costs, then sets ``actors.step_delay_s`` to F x the real cost of an
env step (one unroll's collect time / unroll_length) and ``learner.update_delay_s`` to F x the real cost of the
largest update of the layouts (update on the most unrolls a learner takes + bookkeeping + its all-reduce calls),
prints them, and runs every layout with them: the runs' costs are then mostly fixed sleeps, which the model adds
exactly (the profiles measure the real costs and record the delays).

``--batched ENV --envs 64 1024 8192``: instead, the model's cost of a step of E batched env copies. It profiles one
actor of the first config with ``env.name=ENV`` at ``--profile-envs`` (a piecewise-linear curve in E), predicts the
actor's collect rate (env steps/s) at each E of ``--envs`` from it (``Profile.at_envs``: only the profiled E's
timings), and measures that rate at each E. Both are timed back to back in this process, interleaved: ``--unrolls``
unrolls per E (after one to warm up, which compiles a jitted env) in ``--rounds`` rounds over every E, profiled and
checked, so that this machine's drift while it measures moves both alike. Last line ``RESULT batched_max_err=…
batched_mean_err=…``.

Run it on an otherwise idle machine (never beside another benchmark):

    .venv/bin/python tools/scale_model.py [--configs simple_spread_mappo.yaml matrace_spread.yaml]
        [--layouts 1x1 1x2 1x3 2x2 2x4 2x6] [--train-seconds 40] [--large 16x1024@16:16] [--injected 10]
    .venv/bin/python tools/scale_model.py --batched jaxmarl:MPE_simple_spread_v3 [--envs 64 1024 8192]
        [--profile-envs 16 256 2048 16384] [--unrolls 6] [--rounds 3]
"""
import argparse
import dataclasses
import math
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


def round_up(x, digits=2):
    """``x`` rounded up to ``digits`` significant digits."""
    if x <= 0:
        return 0.0
    scale = 10 ** (math.floor(math.log10(x)) - digits + 1)
    return math.ceil(x / scale - 1e-9) * scale


def injected_delays(prof, factor, layouts):
    """``(step_delay_s, update_delay_s)``: ``factor`` x the real cost of an env step and of the largest update of
    ``layouts`` (learners, actors) in profile ``prof`` (measured without delays)."""
    from hpcmarl.sizing import Machine
    from hpcmarl.sizing.profile import ASYNC

    per_step = prof.collect_s / max(1, prof.unroll_length)
    k = prof.batch_unrolls if prof.flow == ASYNC else max(math.ceil(A / L) for L, A in layouts)
    allreduce = prof.grad_steps * Machine().allreduce_call_s if any(L > 1 for L, _ in layouts) else 0.0
    per_update = prof.update_s(k) + prof.overhead_s + allreduce
    step_s, update_s = round_up(factor * per_step), round_up(factor * per_update)
    print(f"{prof.algo} on {prof.env}: real costs {per_step * 1e3:.2f} ms per env step "
          f"({prof.steps_per_unroll // max(1, prof.unroll_length)} copies), {per_update * 1e3:.1f} ms per update "
          f"(on {k} unrolls, with {allreduce * 1e3:.0f} ms of all-reduce calls); injected x{factor:g}: "
          f"actors.step_delay_s={step_s:g} learner.update_delay_s={update_s:g}", flush=True)
    return step_s, update_s


def batched(a):
    """``--batched``: profile one actor at --profile-envs, predict its collect rate at --envs, measure it."""
    import torch

    from hpcmarl.config import load_config
    from hpcmarl.sizing import measure, step_costs

    torch.set_num_threads(1)
    path = os.path.join(ROOT, "configs", a.configs[0])
    e0 = min(a.profile_envs)
    cfg = load_config(path, [f"env.name={a.batched}", f"env.num_envs={e0}", "output.trajectories=false"]
                      + list(a.overrides))
    prof = measure(cfg, unrolls=3, busy=0)  # the rest of the profile (T, the learner): its curve is replaced
    print(f"timing {a.unrolls} unrolls at each E of {sorted(set(a.profile_envs) | set(a.envs))} in {a.rounds} "
          "interleaved rounds", flush=True)
    timed = {int(r[0]): r for r in step_costs(cfg, sorted(set(a.profile_envs) | set(a.envs)), a.unrolls, a.rounds)}
    prof = dataclasses.replace(prof, envs_curve=[timed[E] for E in sorted(set(a.profile_envs))])
    print(f"{a.batched} ({cfg.algo.name} inference, unroll {prof.unroll_length} steps): seconds per step of E copies "
          "(collect = env + inference + record)")
    for E, c, e, i in prof.envs_curve:
        print(f"  E={int(E):>6}: collect {c * 1e3:8.3f} ms  env {e * 1e3:8.3f} ms  inference {i * 1e3:8.3f} ms  "
              f"-> {E / c:,.0f} env steps/s")
    rows, errs = [], []
    for E in a.envs:
        p = prof.at_envs(E)
        pred = p.steps_per_unroll / p.collect_s
        _, c, e, i = timed[E]
        got = E / c
        err = pred / got - 1
        errs.append(err)
        rows.append([E, got, pred, err, c * 1e3, e * 1e3, i * 1e3])
        print(f"  E={E}: measured {got:,.0f} env steps/s, predicted {pred:,.0f} ({err:+.1%})", flush=True)
    print(f"\none actor's collect rate with {a.batched}, measured vs predicted (profiled at E = "
          f"{', '.join(map(str, a.profile_envs))})")
    print("| E | measured env steps/s | predicted | error | collect ms/step | env ms/step | inference ms/step |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for E, got, pred, err, c, e, i in rows:
        print(f"| {E} | {got:,.0f} | {pred:,.0f} | {err:+.1%} | {c:.3f} | {e:.3f} | {i:.3f} |")
    errs = np.abs(errs)
    line = f"RESULT batched_max_err={errs.max():.3f} batched_mean_err={errs.mean():.3f}"
    print(line)
    record(__file__, sys.argv[1:], line, extra={"env": a.batched, "profile_envs": a.profile_envs,
                                                "envs_curve": prof.envs_curve, "tables": {"batched": {
        "columns": ["E", "measured env steps/s", "predicted env steps/s", "error", "collect ms/step", "env ms/step",
                    "inference ms/step"], "rows": rows}}})


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
    ap.add_argument("--injected", type=float, default=0.0, metavar="F",
                    help="inject delays F x the real costs per env step and per update (0: none)")
    ap.add_argument("--batched", default="", metavar="ENV", help="check the batched-env cost model on ENV instead")
    ap.add_argument("--envs", nargs="+", type=int, default=[64, 1024, 8192], help="--batched: E values checked")
    ap.add_argument("--profile-envs", nargs="+", type=int, default=[16, 256, 2048, 16384],
                    help="--batched: E values profiled")
    ap.add_argument("--rounds", type=int, default=3, help="--batched: interleaved timing rounds over every E")
    ap.add_argument("overrides", nargs="*", help="key=value overrides for every config")
    a = ap.parse_args()
    if a.batched:
        return batched(a)

    import torch

    from hpcmarl.config import load_config
    from hpcmarl.sizing import Machine, Profile, measure, predict

    torch.set_num_threads(1)
    cores = os.cpu_count() or 1
    out = a.out or tempfile.mkdtemp(prefix="scale_model_")
    os.makedirs(out, exist_ok=True)
    rows, errs, drifts = [], [], []
    chosen = {}
    for config in a.configs:
        path = os.path.join(ROOT, "configs", config)
        cfg = load_config(path, list(a.overrides))
        overrides = list(a.overrides)
        if a.injected > 0:
            saved = os.path.join(out, f"{os.path.splitext(config)[0]}-{a.layouts[0]}.profile-before.json")
            if a.reuse and os.path.exists(saved):  # the delays the runs in --out were made with
                prior = Profile.load(saved)
                step_s, update_s = prior.step_delay_s, prior.update_delay_s
            else:
                step_s, update_s = injected_delays(measure(cfg, unrolls=a.unrolls), a.injected,
                                                   [parse_layout(t) for t in a.layouts])
            overrides += [f"actors.step_delay_s={step_s:g}", f"learner.update_delay_s={update_s:g}"]
            chosen[config] = {"step_delay_s": step_s, "update_delay_s": update_s}
            cfg = load_config(path, overrides)
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
                       + overrides, timeout=a.train_seconds + 300, log_path=run_dir + ".log")
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
    record(__file__, sys.argv[1:], line, extra={"cores": cores, "injected": chosen, "tables": {"layouts": {
        "columns": ["config", "learners x actors", "measured env steps/s", "predicted env steps/s", "error", "drift",
                    "lag predicted", "lag measured", "bottleneck"], "rows": [list(r) for r in rows]}}})
    if not a.out:
        print(f"(runs in {out})", file=sys.stderr)


if __name__ == "__main__":
    main()
