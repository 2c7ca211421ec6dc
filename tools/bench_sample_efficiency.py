#!/usr/bin/env python
"""Sample efficiency: return (summed over agents, ``--window``-episode mean) at fixed env-step budgets, several seeds
per algorithm, plus the reference single-process MAPPO script measured in the same invocation.

Each arm trains ``configs/<config>`` for the largest budget (runs are deterministic per seed, so the numbers do not
depend on the machine's speed; only the wall time does). Prints a table (median over seeds; per-seed values in
brackets), the best windowed return and the final-minus-best drop, draws a PNG, and ends with
``RESULT mappo_500k=… mappo_1m=… mappo_drop=… ref_500k=…`` (plus ``<arm>_<budget>`` for the other arms).

    .venv/bin/python tools/bench_sample_efficiency.py [--arms mappo ippo matrace qmix lbf_mappo lbf_qmix rware_mappo]
        [--seeds 0,1,2] [--budgets 100k,250k,500k,1m,2m] [--ref PATH] [--out runs/bench_se] [--set algo.lr=7e-4 ...]
        [--epymarl EPYMARL/src --epymarl-python VENV/bin/python --window 2000]
        [--arms vmas_mappo --benchmarl-python VENV/bin/python --budgets 250k,500k,1m]
        [--arms smax_mappo --smax-map 3m --window-steps 50k --jaxmarl-baselines JAXMARL/baselines
         --jaxmarl-python VENV/bin/python --jaxmarl-algs mappo,ippo]

``--epymarl`` runs EPyMARL's MAPPO (its own ``mappo`` config; ``tools/reference/epymarl_venv.sh`` builds its
virtualenv from a checkout) on the same task and seeds into the same table and record (arm ``epymarl``); with
``--window 2000`` hpcmarl's return at B is averaged over the same span as EPyMARL's (the 50k env steps before B).

``--benchmarl-python`` runs BenchMARL's MAPPO (``tools/reference/benchmarl_mappo.py``: its own default configs on
VMAS navigation, continuous actions) for the same seeds into the same table and record (arm ``benchmarl``): the
reference of the ``vmas_mappo`` arm. Its return at B is the mean of its iterations' training-episode returns in
the ``--window-steps`` (default 50k) env steps before B; give ``--window-steps 50k`` so that hpcmarl's is over the
episodes that ended in the same span (navigation's episodes end early once every agent is on its goal).

SMAX (battles: every episode reports an outcome) is scored by win rate, any other env by return. The ``smax_*`` arms
train on ``--smax-map``; ``--jaxmarl-baselines`` runs JaxMARL's own SMAX baselines (``tools/reference/jaxmarl_smax.py``:
``--jaxmarl-algs``, e.g. ``mappo,ippo,qmix``, their configs) on the same map and seeds into the same table and record
(arms ``jaxmarl_<alg>``, and ``jaxmarl_qmix_greedy``: QMIX's greedy test win rate); their win rate at B is the
mean of their updates that end in the ``--window-steps`` env steps before B (16,384 env steps each for MAPPO and
IPPO, 2,048 for QMIX: the span may start up to one update earlier), and with ``--window-steps`` hpcmarl's is over
the episodes that ended in that span. The best and drop columns always use the ``--window``-episode curve. The SMAX
arms are ``smax_mappo``, ``smax_matrace`` (and ``smax_matrace4``: 4 actors), ``smax_qmix`` and ``smax_mast``; for
value-based arms the table is followed by each seed's training FLOPs (per learner, from its metrics), the measure
MAST's claim is stated in. ``--greedy-episodes 512`` adds each hpcmarl run's greedy test at the largest budget (rows
``<arm>_greedy``: SMAC's test win rate).

Long benchmarks: ``--estimate 20k`` first trains each arm 20k env steps and prints how long its runs will take
(``--estimate-only`` stops there); ``--reuse`` with the same command goes on where a benchmark stopped (finished runs
are read, a run cut short resumes from its newest checkpoint).

An arm is ``name`` (from ARMS below) or ``label=config.yaml[@ranks][:key=value,...]`` for ablations, e.g.
``--arms "lr7=simple_spread_mappo.yaml@4:algo.lr=7e-4"``. ``--arms`` with none runs only the references (with
``--reuse``, e.g. JaxMARL's curves kept from a GPU machine).
"""
import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np

from _common import ROOT, launch, parse_arm_spec, parse_steps, record, trained_steps

# name -> (config, ranks, overrides): the layouts the targets of issue 16 are stated for
ARMS = {
    "mappo": ("simple_spread_mappo.yaml", 4, ["topology.learners=2"]),
    "rmappo": ("simple_spread_mappo.yaml", 4, ["topology.learners=2", "algo.recurrent=true"]),  # GRU policy
    "ippo": ("simple_spread_mappo.yaml", 4, ["topology.learners=2", "algo.name=ippo"]),
    # JaxMARL's port of simple_spread_v3, batched (max_steps=24: its episodes end one step later than PettingZoo's
    # otherwise; with it the two agree step by step, tests/unit/test_jaxmarl_port.py)
    "mappo_jaxmarl": ("simple_spread_mappo.yaml", 4, ["topology.learners=2", "env.name=jaxmarl:MPE_simple_spread_v3",
                                                      "env.kwargs.max_steps=24"]),
    "matrace": ("matrace_spread.yaml", 4, ["topology.learners=2"]),
    "qmix": ("qmix_spread.yaml", 3, []),
    # Level-Based Foraging (EPyMARL's Foraging-8x8-2p-2f-coop-v3, time limit 50; the best return is 1.0)
    "lbf_mappo": ("lbf_mappo.yaml", 4, ["topology.learners=2"]),
    "lbf_qmix": ("lbf_qmix.yaml", 3, []),  # recurrent agents, TD(lambda), scaled observations
    # Multi-Robot Warehouse (rware-tiny-2ag-v2, time limit 500; sparse: +1 per delivered shelf)
    "rware_mappo": ("rware_mappo.yaml", 2, []),  # EPyMARL's MAPPO settings (--epymarl-env for its own run)
    # continuous actions (Gaussian heads): VMAS navigation with BenchMARL's task config (reference: --benchmarl-python)
    "vmas_mappo": ("vmas_navigation_mappo.yaml", 2, []),
    # SMAX (JaxMARL's StarCraft-style battles against heuristic enemies, --smax-map): scored by win rate
    "smax_mappo": ("smax_mappo.yaml", 2, []),
    "smax_matrace": ("smax_matrace.yaml", 2, []),
    "smax_matrace4": ("smax_matrace.yaml", 5, ["topology.actors=4"]),  # the MA-Trace paper's scaling claim
    "smax_qmix": ("smax_qmix.yaml", 2, []),
    "smax_mast": ("smax_mast.yaml", 2, []),  # QMIX with 90% sparse networks: its training FLOPs are reported
}


def budget_name(n: int) -> str:
    return f"{n // 1_000_000}m" if n % 1_000_000 == 0 else f"{n // 1000}k"


def parse_arm(text: str):
    if "=" not in text.split(":")[0]:
        if text not in ARMS:
            raise SystemExit(f"unknown arm {text!r} (known: {', '.join(ARMS)}; or label=config.yaml[@ranks][:k=v,...])")
        return text, ARMS[text]
    label, config, ranks, overrides = parse_arm_spec(text)
    return label, (config, ranks or 4, overrides)


def windowed(steps: np.ndarray, ret: np.ndarray, window: int, budgets, window_steps: int = 0):
    """The window mean at every episode index (from the first full window) and at each budget: over the last
    ``window`` episodes within it, or with ``window_steps`` over the episodes that ended in the env steps
    (B - window_steps, B]."""
    csum = np.concatenate([[0.0], np.cumsum(ret)])
    idx = np.arange(window, len(ret) + 1)
    curve = (csum[idx] - csum[idx - window]) / window  # mean of episodes [i-window, i)
    at = {}
    for b in budgets:
        k = int(np.searchsorted(steps, b, side="right"))  # episodes finished within the budget
        reached = len(steps) and steps[-1] >= 0.99 * b  # (the last update may end a little short of the budget)
        lo = int(np.searchsorted(steps, b - window_steps, side="right")) if window_steps else max(0, k - window)
        full = k > lo if window_steps else k >= min(window, len(ret))
        at[b] = float(np.mean(ret[lo:k])) if reached and full else float("nan")
    return steps[idx - 1], curve, at


def is_smax(arm) -> bool:
    """Whether an arm trains on SMAX (its env.name, from its overrides or else its config)."""
    import yaml

    config, _, overrides = arm
    names = [o.split("=", 1)[1] for o in overrides if o.startswith("env.name=")]
    return "SMAX" in (names[-1] if names else
                      str(yaml.safe_load(open(os.path.join(ROOT, "configs", config)))["env"]["name"]))


def on_map(label, arm, a):
    """``(label, overrides)`` of an arm's runs: a SMAX arm's name their map and train on ``--smax-map``."""
    if is_smax(arm):
        return f"{label}-{a.smax_map}", arm[2] + [f"env.kwargs.scenario={a.smax_map}"]
    return label, arm[2]


def train(arm, overrides, run_dir, seed, steps, a, fresh=True):
    """Train one run of ``arm`` (its config and ranks; ``overrides`` from :func:`on_map`) to ``steps`` env steps under
    the hard timeout; returns its wall time."""
    config, ranks = arm[:2]
    return launch(ranks, os.path.join(ROOT, "configs", config),
                  [f"run_dir={run_dir}", f"seed={seed}", f"train.total_env_steps={steps}", "train.max_wall_s=0",
                   "output.trajectories=false", "output.progress_s=60"] + (["--fresh"] if fresh else [])
                  + overrides + a.set, timeout=a.timeout_h * 3600, log_path=run_dir + ".log")


def run_arm(label, arm, seed, budget, a):
    """(env steps, score) per episode of one seed's run: its outcome (1 = won) where every episode has one (battles:
    SMAX), else its return summed over agents. A SMAX arm trains on ``--smax-map``."""
    from hpcmarl.storage import Run

    label, overrides = on_map(label, arm, a)
    run_dir = os.path.join(a.out, f"{label}-s{seed}")

    reached = trained_steps(run_dir) if a.reuse else -1
    if reached < budget:
        # --reuse with a run cut short (killed, timed out): go on from its newest checkpoint
        resume = reached >= 0 and bool(Run(run_dir).checkpoints())
        if resume:
            print(f"  {label} seed {seed}: resuming at {reached:,} env steps", flush=True)
        t = train(arm, overrides, run_dir, seed, budget, a, fresh=not resume)
        print(f"  {label} seed {seed}: {budget:,} env steps in {t:.0f}s", flush=True)
    run = Run(run_dir)
    m = run.metrics()
    # a reused run trained further is read up to the update where a run to this budget stops
    at = np.asarray(m.get("env_steps", []))
    end = stop_at(at, budget) or np.inf
    ep = run.episodes()
    ep = {k: np.asarray(v)[np.asarray(ep["env_steps"]) <= end] for k, v in ep.items()}
    won = np.asarray(ep.get("won", []), float)
    score = won if won.size and np.isfinite(won).all() else sum(v for k, v in ep.items() if k.startswith("return/"))
    flops = m.get("flops/train_total")  # value-based learners count their training FLOPs
    flops = flops[at <= end] if flops is not None else None
    return (np.asarray(ep["env_steps"], float), np.asarray(score, float),
            float(flops[-1]) if flops is not None and len(flops) else None)


def stop_at(env_steps, budget):
    """Where a run to ``budget`` stops: its first metrics row's env steps at or past it (None: not reached)."""
    past = env_steps[env_steps >= budget]
    return past[0] if len(past) else None


def greedy_score(label, arm, seed, budget, a):
    """A seed's greedy score at ``budget``: the kept checkpoint where a run to the budget stops (the first metrics row
    at or past it, as the curve is read) plays ``--greedy-episodes`` episodes, all env copies at once, env seed 12345,
    the most likely actions (``hpcmarl evaluate --greedy``): its win rate (battles) or its return summed over groups.
    NaN where that checkpoint was not kept (runs keep their newest few)."""
    from hpcmarl.analysis import evaluate
    from hpcmarl.storage import Run, open_read

    run = Run(os.path.join(a.out, f"{on_map(label, arm, a)[0]}-s{seed}"))
    end = stop_at(np.asarray(run.metrics().get("env_steps", [])), budget)
    for ckpt in run.checkpoints():
        with open_read(ckpt) as f:
            if f.attrs.get("env_steps") != end:
                continue
        r = evaluate.evaluate(ckpt, episodes=a.greedy_episodes, seed=12345, greedy=True, num_envs=a.greedy_episodes)
        return r["win_rate"] if np.isfinite(r["win_rate"]) else sum(g["return_mean"] for g in r["groups"].values())
    print(f"  {label} seed {seed}: no kept checkpoint at {budget:,} env steps to play greedily", flush=True)
    return float("nan")


def estimate(arms, seeds, top, a):
    """Before training: each arm trains ``--estimate`` env steps on its first seed (in ``--out/estimate``) and the
    time of what is still to train is printed from that run's rate (its metrics' env steps over wall time, the
    first row on) and its start-up (the rest of its wall time). Returns the seconds estimated in all."""
    from hpcmarl.storage import Run

    total = 0.0
    for label, arm in arms:
        name, overrides = on_map(label, arm, a)
        run_dir = os.path.join(a.out, "estimate", label)
        t = train(arm, overrides, run_dir, seeds[0], a.estimate, a)
        m = Run(run_dir).metrics()
        steps, wall = np.asarray(m["env_steps"], float), np.asarray(m["wall_time"], float)
        rate = (steps[-1] - steps[0]) / (wall[-1] - wall[0]) if len(steps) > 1 and wall[-1] > wall[0] else \
            steps[-1] / t
        startup = max(0.0, t - steps[-1] / rate)
        left = [top - max(trained_steps(os.path.join(a.out, f"{name}-s{s}")) if a.reuse else 0, 0) for s in seeds]
        secs = sum(startup + n / rate for n in left if n > 0)
        total += secs
        print(f"estimate: {label}: {rate:,.0f} env steps/s after {startup:.0f} s of start-up ({a.estimate:,} env "
              f"steps in {t:.0f} s): {(startup + top / rate) / 60:.1f} min per seed to {top:,} env steps, "
              f"{secs / 60:.1f} min for the {sum(n > 0 for n in left)} run(s) to train", flush=True)
    print(f"estimate: {total / 60:.1f} min for the hpcmarl arms (references not included)", flush=True)
    return total


def run_reference(path, budget, seed_label, a):
    """The reference script stops by wall time and prints ``steps=… ret=…`` (its own 200-episode window) every 10 s:
    run it until it passes the budget and read its curve."""
    log = os.path.join(a.out, f"ref-{seed_label}.log")
    if not (a.reuse and os.path.exists(log)):
        proc = subprocess.Popen([sys.executable, path, str(a.timeout_h * 3600)], stdout=subprocess.PIPE, text=True,
                                cwd=a.out, start_new_session=True)
        t0 = time.monotonic()
        with open(log, "w") as f:
            for line in proc.stdout:
                f.write(line)
                m = re.search(r"steps=(\d+)", line)
                if m and int(m.group(1)) >= budget:
                    break
        proc.kill()
        proc.wait()
        print(f"  reference run {seed_label}: {budget:,} env steps in {time.monotonic() - t0:.0f}s", flush=True)
    pts = [(int(m.group(1)), float(m.group(2)))
           for m in re.finditer(r"steps=(\d+) sps=\d+ ret=(-?[\d.]+)", open(log).read())]
    return np.array([p[0] for p in pts], float), np.array([p[1] for p in pts], float)


def epymarl_segments(sacred: str, results: str) -> list:
    """``[(load_step, metrics.json)]`` of the sacred runs under ``sacred`` whose ``local_results_path`` is
    ``results``: one run of EPyMARL and the runs that resumed it, in order."""
    out = []
    for d, _, files in os.walk(sacred):
        if "metrics.json" in files and "config.json" in files:
            cfg = json.load(open(os.path.join(d, "config.json")))
            if cfg.get("local_results_path") == results:
                run = os.path.basename(d)
                out.append((int(cfg.get("load_step", 0)) if cfg.get("checkpoint_path") else 0,
                            int(run) if run.isdigit() else 0, os.path.join(d, "metrics.json")))
    return [(step, path) for step, _, path in sorted(out)]


def epymarl_checkpoint(results: str):
    """``(models/<token> directory, env steps)`` of the newest checkpoint EPyMARL saved under ``results``, or None."""
    models = os.path.join(results, "models")
    found = [(int(t), os.path.join(models, token)) for token in os.listdir(models)
             for t in os.listdir(os.path.join(models, token)) if t.isdigit()] if os.path.isdir(models) else []
    if not found:
        return None
    step, path = max(found)
    return path, step


def run_epymarl(seed, budget, a):
    """EPyMARL's MAPPO (its own ``mappo`` config) from ``--epymarl`` (its ``src`` directory) with ``--epymarl-python``
    on ``--epymarl-env``: its sacred ``metrics.json`` has ``return_mean`` every 10k env steps, the mean team return
    of the training episodes since the previous point; the curve is kept as ``epymarl-s<seed>.json`` in ``--out``.

    EPyMARL saves its networks and optimisers every ``--epymarl-save-every`` env steps under
    ``--out/epymarl-s<seed>/run-<n>`` (a new ``n`` for each run started afresh). A run cut short (killed,
    ``--timeout-h``) goes on with ``--reuse`` from its newest checkpoint (EPyMARL's own ``checkpoint_path`` and
    ``load_step``), and so does a kept curve short of a larger budget; the curve joins the points of each piece up
    to where the next one resumed. EPyMARL's resume is not exact: it sets its target critic to the critic and
    restarts its reward-standardisation statistics and random streams."""
    keep = os.path.join(a.out, f"epymarl-s{seed}.json")
    kept = a.reuse and os.path.exists(keep) and \
        max(json.load(open(keep))["return_mean"]["steps"], default=0) >= budget - 10_000  # its points: 10k apart
    if not kept:  # (a kept curve short of the budget goes on from its newest checkpoint)
        src = os.path.abspath(a.epymarl)
        sacred = os.path.join(os.path.dirname(src), "results", "sacred")
        base = os.path.abspath(os.path.join(a.out, f"epymarl-s{seed}"))
        pieces = sorted(d for d in os.listdir(base) if d.startswith("run-")) if os.path.isdir(base) else []
        results = os.path.join(base, pieces[-1] if a.reuse and pieces else f"run-{len(pieces) + 1:03d}")
        ckpt = epymarl_checkpoint(results)
        cmd = [a.epymarl_python, "main.py", "--config=mappo", "--env-config=gymma", "with", *a.epymarl_env.split(),
               "common_reward=True", "reward_scalarisation=sum", "use_cuda=False", f"seed={seed}",
               f"t_max={budget + 500}", "save_model=True", f"save_model_interval={a.epymarl_save_every}",
               f"local_results_path={results}"]
        if ckpt:
            cmd += [f"checkpoint_path={ckpt[0]}", f"load_step={ckpt[1]}"]
            print(f"  epymarl seed {seed}: resuming at {ckpt[1]:,} env steps ({ckpt[0]})", flush=True)
        os.makedirs(results, exist_ok=True)
        t0 = time.monotonic()
        with open(os.path.join(a.out, f"epymarl-s{seed}.log"), "a") as log:
            proc = subprocess.Popen(cmd, cwd=src, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            try:
                code = proc.wait(timeout=a.timeout_h * 3600)
            except subprocess.TimeoutExpired:  # its env workers too: the whole process group
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                raise SystemExit(f"EPyMARL seed {seed}: --timeout-h {a.timeout_h} passed; the same command with "
                                 f"--reuse resumes it from its newest checkpoint") from None
        if code:
            raise subprocess.CalledProcessError(code, cmd)
        curve = {"steps": [], "values": []}
        segments = epymarl_segments(sacred, results)
        if not segments:
            raise SystemExit(f"EPyMARL seed {seed}: no sacred run under {sacred} wrote to {results}")
        for i, (_, path) in enumerate(segments):
            m = json.load(open(path))["return_mean"]
            until = segments[i + 1][0] if i + 1 < len(segments) else float("inf")
            for x, y in zip(m["steps"], m["values"]):
                if x <= until:
                    curve["steps"].append(x)
                    curve["values"].append(y)
        json.dump({"return_mean": curve, "pieces": [p for _, p in segments]}, open(keep, "w"))
        print(f"  epymarl seed {seed}: {budget:,} env steps in {time.monotonic() - t0:.0f}s", flush=True)
    m = json.load(open(keep))["return_mean"]
    return np.asarray(m["steps"], float), np.asarray(m["values"], float)


def run_kept(keep, cmd, what, budget, a):
    """A reference's run writing its curve to ``keep`` (JSON, in ``--out``; its log beside it), or with ``--reuse``
    the kept one: the parsed curve."""
    if not (a.reuse and os.path.exists(keep)):
        t0 = time.monotonic()
        with open(os.path.splitext(keep)[0] + ".log", "w") as log:
            subprocess.run(cmd, cwd=a.out, stdout=log, stderr=subprocess.STDOUT, check=True,
                           timeout=a.timeout_h * 3600, start_new_session=True)
        print(f"  {what}: {budget:,} env steps in {time.monotonic() - t0:.0f}s", flush=True)
    return json.load(open(keep))


def run_benchmarl(seed, budget, a):
    """BenchMARL's MAPPO (``tools/reference/benchmarl_mappo.py``) run by ``--benchmarl-python``: one point per
    6,000-env-step iteration, the iteration's mean training-episode return summed over the agents."""
    keep = os.path.join(a.out, f"benchmarl-s{seed}.json")
    c = run_kept(keep, [a.benchmarl_python, os.path.join(ROOT, "tools", "reference", "benchmarl_mappo.py"),
                        str(budget), str(seed), keep], f"benchmarl seed {seed}", budget, a)
    return np.asarray(c["frames"], float), np.asarray(c["return"], float)


def run_jaxmarl(alg, seed, budget, a, key="win_rate"):
    """JaxMARL's own SMAX baseline ``alg`` (``tools/reference/jaxmarl_smax.py``) on ``--smax-map``, run by
    ``--jaxmarl-python``: its win rate per update (``key``: qmix's greedy ``test_win_rate`` instead)."""
    keep = os.path.join(a.out, f"jaxmarl_{alg}-{a.smax_map}-s{seed}.json")
    c = run_kept(keep, [a.jaxmarl_python, os.path.join(ROOT, "tools", "reference", "jaxmarl_smax.py"),
                        os.path.abspath(a.jaxmarl_baselines), alg, a.smax_map, str(budget), str(seed), keep],
                 f"jaxmarl_{alg} seed {seed}", budget, a)
    return np.asarray(c["env_steps"], float), np.asarray(c[key], float)


def points_at(steps, ret, budgets, window_steps, slack=0):
    """A reference's return at budget B: the mean of its logged points in (B - window + slack, B + slack]
    (EPyMARL's ``return_mean`` points sit 250 env steps past each 10k: slack 1000; with 50k, the five points, about
    2,000 episodes, before B; BenchMARL's sit at multiples of 6,000: slack 0)."""
    at = {}
    for b in budgets:
        sel = (steps > b - window_steps + slack) & (steps <= b + slack)
        at[b] = float(np.mean(ret[sel])) if sel.any() and steps[-1] >= b else float("nan")
    return at


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arms", nargs="*", default=["mappo", "ippo", "matrace", "qmix", "lbf_mappo", "lbf_qmix"])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--budgets", default="100k,250k,500k,1m,2m")
    ap.add_argument("--window", type=int, default=500)
    ap.add_argument("--ref", default=os.path.join(ROOT, "tools", "reference", "mappo_90_lines.py"),
                    help="the reference MAPPO script ('' to skip it)")
    ap.add_argument("--epymarl", default="", help="EPyMARL's src directory: also run its MAPPO (arm 'epymarl'; "
                    "tools/reference/epymarl_venv.sh builds its virtualenv)")
    ap.add_argument("--epymarl-python", default=sys.executable, help="the python of EPyMARL's virtualenv")
    ap.add_argument("--epymarl-env", default="env_args.key=pz-mpe-simple-spread-v3 env_args.time_limit=25",
                    help="EPyMARL's env settings (sacred 'with' arguments)")
    ap.add_argument("--epymarl-save-every", type=parse_steps, default=100_000,
                    help="EPyMARL saves a checkpoint every this many env steps (a run cut short resumes there)")
    ap.add_argument("--epymarl-window", type=parse_steps, default=50_000,
                    help="EPyMARL's return at B: its points over this many env steps before B (--window 2000 "
                    "episodes of 25 steps is the same span for hpcmarl)")
    ap.add_argument("--benchmarl-python", default="", help="a Python with benchmarl, torchrl and vmas: also run "
                    "BenchMARL's MAPPO on VMAS navigation (arm 'benchmarl', the vmas_mappo arm's reference)")
    ap.add_argument("--smax-map", default="3m", help="the SMAX scenario of the smax_* arms and JaxMARL's baselines")
    ap.add_argument("--jaxmarl-baselines", default="", help="JaxMARL's baselines directory: also run its SMAX "
                    "baselines (--jaxmarl-algs) on --smax-map (arms 'jaxmarl_<alg>')")
    ap.add_argument("--jaxmarl-python", default=sys.executable,
                    help="a Python with jaxmarl, flax, optax, distrax, hydra-core, wandb")
    ap.add_argument("--jaxmarl-algs", default=None,
                    help="JaxMARL's SMAX baselines to run with --jaxmarl-baselines: mappo (default), ippo, qmix (its "
                    "Python also needs flashbax)")
    ap.add_argument("--window-steps", type=parse_steps, default=0, help="the value at B averages the episodes that "
                    "ended in the env steps (B - this, B] (0: the last --window episodes); also JaxMARL's span")
    ap.add_argument("--out", default=os.path.join(ROOT, "runs", "bench_se"))
    ap.add_argument("--set", nargs="*", default=[], help="overrides for every arm")
    ap.add_argument("--reuse", action="store_true", help="read runs already in --out instead of "
                    "training them again; a run cut short (killed, timed out) resumes from its newest checkpoint")
    ap.add_argument("--timeout-h", type=float, default=3.0, help="hard limit per run")
    ap.add_argument("--greedy-episodes", type=int, default=0, help="also play each hpcmarl run's checkpoint at the "
                    "largest budget this many episodes with its most likely actions (rows '<arm>_greedy'; SMAX's "
                    "test win rate, as JaxMARL's QMIX tests with 512)")
    ap.add_argument("--estimate", type=parse_steps, default=0, help="first train each arm this many env steps "
                    "(e.g. 20k) and print how long the benchmark's hpcmarl runs will take")
    ap.add_argument("--estimate-only", action="store_true", help="stop after the estimate")
    a = ap.parse_args()
    if a.jaxmarl_algs is not None and not a.jaxmarl_baselines:
        ap.error("--jaxmarl-algs needs --jaxmarl-baselines (JaxMARL's baselines directory)")
    a.jaxmarl_algs = a.jaxmarl_algs or "mappo"
    a.out = os.path.abspath(a.out)
    os.makedirs(a.out, exist_ok=True)
    budgets = [parse_steps(b) for b in a.budgets.split(",")]
    seeds = [int(s) for s in a.seeds.split(",")]
    arms = [parse_arm(x) for x in a.arms]
    top = max(budgets)

    if a.estimate:
        estimate(arms, seeds, top, a)
    elif a.estimate_only:
        raise SystemExit("--estimate-only needs --estimate STEPS")
    if a.estimate_only:
        return
    rows, curves, flops = {}, {}, {}
    for label, arm in arms:
        print(f"{label}: {arm[0]} on {arm[1]} ranks {' '.join(arm[2] + a.set)}", flush=True)
        per_seed = []
        for s in seeds:
            steps, ret, f = run_arm(label, arm, s, top, a)
            if f is not None:
                flops.setdefault(label, []).append(f)
            x, y, at = windowed(steps, ret, a.window, budgets, a.window_steps)
            after = x >= min(500_000, top)  # the drop is measured after 500k env steps (or the last budget)
            best = float(np.max(y)) if len(y) else float("nan")
            final = float(y[-1]) if len(y) else float("nan")
            per_seed.append({**{budget_name(b): v for b, v in at.items()}, "best": best,
                             "drop": final - float(np.max(y[after])) if after.any() else float("nan")})
            curves.setdefault(label, []).append((x, y))
        rows[label] = per_seed

    references = {}  # label -> the plot's name for it

    def reference_rows(label, name, run, at_budgets):
        """Per-seed rows of a reference outside hpcmarl (its curve ``run(seed) -> (x, y)``, already windowed)."""
        references[label] = name
        per_seed = []
        for s in seeds:
            x, y = run(s)
            after = x >= min(500_000, top)
            per_seed.append({**{budget_name(b): v for b, v in at_budgets(x, y).items()}, "best": float(y.max()),
                             "drop": float(y[-1] - y[after].max()) if after.any() else float("nan")})
            curves.setdefault(label, []).append((x, y))
        rows[label] = per_seed

    if a.ref:
        reference_rows("ref", "ref (its 200-episode window)",
                       lambda s: run_reference(os.path.abspath(a.ref), top, f"r{s}", a),
                       lambda x, y: {b: float(y[np.searchsorted(x, b, side="right") - 1]) if x.size and x[0] <= b
                                     else float("nan") for b in budgets})
    if a.epymarl:
        reference_rows("epymarl", "EPyMARL MAPPO (10k-step points)", lambda s: run_epymarl(s, top, a),
                       lambda x, y: points_at(x, y, budgets, a.epymarl_window, slack=1000))
    if a.benchmarl_python:
        reference_rows("benchmarl", "BenchMARL MAPPO (6k-step points)", lambda s: run_benchmarl(s, top, a),
                       lambda x, y: points_at(x, y, budgets, a.window_steps or 50_000))
    for alg in filter(None, a.jaxmarl_algs.split(",") if a.jaxmarl_baselines else []):
        reference_rows(f"jaxmarl_{alg}", f"JaxMARL {alg.upper()} (win rate per update)",
                       lambda s, alg=alg: run_jaxmarl(alg, s, top, a),
                       lambda x, y: points_at(x, y, budgets, a.window_steps or 50_000))
        if alg == "qmix":  # and its greedy test win rate (repeated between tests)
            reference_rows("jaxmarl_qmix_greedy", "JaxMARL QMIX, greedy tests",
                           lambda s: run_jaxmarl("qmix", s, top, a, key="test_win_rate"),
                           lambda x, y: points_at(x, y, budgets, a.window_steps or 50_000))

    nan, top_only = float("nan"), set()
    for label, arm in arms if a.greedy_episodes else []:  # at the largest budget only
        references[f"{label}_greedy"] = f"{label}, greedy"
        top_only.add(f"{label}_greedy")
        rows[f"{label}_greedy"] = [{**{budget_name(b): nan for b in budgets}, "best": nan, "drop": nan,
                                    budget_name(top): greedy_score(label, arm, s, top, a)} for s in seeds]

    cols = [budget_name(b) for b in budgets] + ["best", "drop"]
    span = (f"the episodes of the {a.window_steps:,} env steps before" if a.window_steps
            else f"{a.window}-episode window")
    print(f"\nwin rate (battles) or return summed over agents ({span}; the reference: its own 200-episode window; "
          f"EPyMARL: its training episodes over the {a.epymarl_window:,} env steps before; BenchMARL and JaxMARL: "
          f"their points over the span before), median over seeds {seeds} [per seed]")
    print("| arm | " + " | ".join(cols) + " |")
    print("|---|" + "---:|" * len(cols))
    med = {}
    for label, per_seed in rows.items():
        big = max((abs(r[c]) for r in per_seed for c in cols if not np.isnan(r[c])), default=0.0)
        fmt = "{:.1f}" if big >= 10 else "{:.3f}"  # LBF returns lie in [0, 1]
        cells = []
        for c in cols:
            vals = [r[c] for r in per_seed]
            med[(label, c)] = float(np.nanmedian(vals)) if not all(np.isnan(vals)) else float("nan")
            cells.append(f"{fmt.format(med[(label, c)])} [{', '.join(fmt.format(v) for v in vals)}]")
        print(f"| {label} | " + " | ".join(cells) + " |")
    for label, fs in flops.items():
        print(f"training FLOPs per learner, {label}: median {np.median(fs):.3g} [{', '.join(f'{f:.3g}' for f in fs)}]")
    with open(os.path.join(a.out, "summary.json"), "w") as f:
        json.dump({"rows": rows, "seeds": seeds, "budgets": budgets, "window": a.window,
                   "window_steps": a.window_steps}, f, indent=1)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(8, 5))
        for k, (label, cs) in enumerate(curves.items()):
            for j, (x, y) in enumerate(cs):
                ax.plot(x, y, color=f"C{k}", alpha=0.8, lw=1,
                        label=references.get(label, label) if j == 0 else None)
        ax.set_xlabel("env steps")
        ax.set_ylabel(f"win rate or return ({a.window}-episode window)")
        ax.legend()
        ax.grid(alpha=0.3)
        fig.savefig(os.path.join(a.out, "sample_efficiency.png"), dpi=100, bbox_inches="tight")
        print(f"plot: {os.path.join(a.out, 'sample_efficiency.png')}")
    except ImportError:
        pass
    fields = []
    for label in rows:
        for b in [top] if label in top_only else budgets:
            fields.append(f"{label}_{budget_name(b)}={med[(label, budget_name(b))]:.2f}")
        if label not in references:
            fields.append(f"{label}_drop={med[(label, 'drop')]:.2f}")
        if label.startswith("lbf_"):  # the LBF target is stated at the largest budget
            fields.append(f"{label}={med[(label, budget_name(top))]:.3f}")
    line = "RESULT " + " ".join(fields)
    print(line)
    record(__file__, sys.argv[1:], line, seeds=seeds,  # return per seed at each budget; null: not reached
           per_seed={label: {c: [r[c] for r in per_seed] for c in cols} for label, per_seed in rows.items()},
           medians={label: {c: med[(label, c)] for c in cols} for label in rows},
           extra={"window": a.window, "window_steps": a.window_steps, "budgets": budgets,
                  **({"train_flops": flops} if flops else {}),
                  **({"smax_map": a.smax_map} if a.jaxmarl_baselines or any(is_smax(arm) for _, arm in arms)
                     else {}),
                  **({"epymarl": {"window_steps": a.epymarl_window, "env": a.epymarl_env}} if a.epymarl else {})})


if __name__ == "__main__":
    main()
