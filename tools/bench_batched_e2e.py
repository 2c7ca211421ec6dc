#!/usr/bin/env python
"""End-to-end training speed on a batched env against a reference framework run in the same invocation: JaxMARL's
own IPPO baseline on its MPE port (``--against jaxmarl``), or BenchMARL's MAPPO on a VMAS scenario (``--against
benchmarl``).

``--against jaxmarl``: arms, each trained for ``--steps`` env steps, one after another (never two at once):

* ``jaxmarl``: JaxMARL's ``baselines/IPPO/ippo_ff_mpe.py`` with its own ``ippo_ff_mpe.yaml`` (one seed:
  ``NUM_SEEDS=1``, ``TOTAL_TIMESTEPS=--steps``), run by ``--jaxmarl-python`` from ``--jaxmarl-baselines`` (a
  checkout of JaxMARL's ``baselines/IPPO``; it needs flax, optax, distrax and hydra-core, e.g. in a virtualenv of
  its own), its ``make_train`` as its ``main()`` runs it (``tools/reference/jaxmarl_ippo_mpe.py``, without the
  plot). Its time is the whole process: imports, compilation and training.
* ``ippo_<L>x<A>_E<E>``: hpcmarl IPPO on ``jaxmarl:MPE_simple_spread_v3`` with the baseline's PPO work per sample
  (2,048 env steps per update: ``--copies`` copies in all x ``2048 / copies`` steps, 4 epochs x 4 minibatches, lr
  2.5e-4, no value normalisation, as the baseline), ``L`` learners and ``A`` actors (``--layouts L:A,...``; ranks =
  L + A; one learner: ``actors.overlap=true``, the actors collect the next unroll during the update), for every
  ``--copies``.
* ``shipped``: ``configs/simple_spread_mappo.yaml`` (MAPPO, hpcmarl's shipped simple_spread settings) on the same
  env, in the layout of the fastest hpcmarl arm (with ``--against benchmarl``: ``configs/vmas_navigation_mappo.yaml``),
  collecting as the config says (simple_spread: synchronously; VMAS: overlapped, with decoupled PPO). Records dated
  before 2026-11-28 forced ``actors.overlap=true`` on this arm with one learner, whatever the config said.

``--against benchmarl``: BenchMARL's MAPPO (``--benchmarl-python``: a Python with benchmarl, torchrl, vmas) with its
own default experiment, algorithm, MLP and task configs on ``vmas:navigation`` (6,000 frames per iteration from 10
envs, 45 passes over it in 15 minibatches of 400 frames each: 675 gradient steps per iteration, 256 x 256 tanh MLPs,
sampling and training on the CPU, no evaluation or logging), against hpcmarl MAPPO
(``configs/vmas_navigation_mappo.yaml``: the same task kwargs) with the same network width and work per sample
(6,000 env steps per update: ``--copies`` x ``6000 / copies`` steps, 45 epochs x 15 minibatches), per layout and
``--copies``. Records before commit 099b5b3 ran these arms with 3 epochs x 15 minibatches: a fifteenth of
BenchMARL's gradient steps, not its work per sample.

hpcmarl's times are the whole ``mpirun`` too (startup, compilation, checkpoints). ``--pairs N`` rounds (default 3),
one after another: the reference, then every hpcmarl arm once per ``--caches`` entry: ``cold`` with an empty compile
cache (``XDG_CACHE_HOME``: compiling the update counted, as in a user's first run), ``warm`` with the cache the cold
run left; ratios are per round (hpcmarl / that round's reference) and the medians are reported. The shipped arm runs
once at the end, with an empty cache. JaxMARL's return is the one its training logged in its last update
(``tools/reference/jaxmarl_ippo_mpe.py``); hpcmarl's the run's last 500-episode mean (both summed over the agents).
Records before 2026-11-29 ran the reference and each arm once, uncompiled. Prints a table and ends with
``RESULT ref_sps=… best_sps=… best_ratio=… best_arm=… best_ratio_cold=… ref_return=… best_return=… shipped_sps=…
shipped_ratio=…`` (env steps per second of wall time, medians; ratio = hpcmarl / the reference; best_* the warm arm).

    .venv/bin/python tools/bench_batched_e2e.py --jaxmarl-baselines PATH/baselines/IPPO \\
        --jaxmarl-python PATH/bin/python [--steps 2m] [--pairs 3] [--caches cold,warm] [--layouts 1:1] [--copies 128]
    .venv/bin/python tools/bench_batched_e2e.py --against benchmarl --benchmarl-python PATH/bin/python \\
        [--steps 600k] [--layouts 1:1] [--copies 60,600]
"""
import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from _common import ROOT, launch, parse_steps, record

# reference -> (hpcmarl's config, env, env steps per update, overrides for the reference's PPO work per sample)
SETUPS = {
    "jaxmarl": ("simple_spread_mappo.yaml", "jaxmarl:MPE_simple_spread_v3",
                2048,  # ippo_ff_mpe.yaml: NUM_ENVS 16 x NUM_STEPS 128 per update
                ["algo.name=ippo", "algo.epochs=4", "algo.minibatches=4", "algo.lr=2.5e-4", "algo.value_norm=false"]),
    "benchmarl": ("vmas_navigation_mappo.yaml", "vmas:navigation",  # the config has BenchMARL's task kwargs
                  6000,  # base_experiment.yaml: 6,000 frames per batch; on_policy_n_minibatch_iters 45 passes, each
                  # over all of it in minibatches of 400 (Experiment._collection_loop): 45 x 15 gradient steps
                  ["algo.epochs=45", "algo.minibatches=15", "algo.hidden=256", "algo.lr=5e-5", "algo.gae_lambda=0.9",
                   "algo.entropy_coef=0", "algo.max_grad_norm=5"]),
}


def timed(cmd, cwd, timeout, what):
    t0 = time.monotonic()
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                       env=dict(os.environ, WANDB_MODE="disabled"))
    if p.returncode != 0:
        raise SystemExit(f"{what} failed (exit {p.returncode}):\n{(p.stdout + p.stderr)[-3000:]}")
    return time.monotonic() - t0


def jaxmarl_arm(args, steps: int) -> tuple:
    """(wall seconds, the return logged in its last update) of JaxMARL's IPPO training ``steps`` env steps (one
    seed; ``tools/reference/jaxmarl_ippo_mpe.py`` runs its ``make_train`` as its main() does, without the plot)."""
    if not os.path.isfile(os.path.join(args.jaxmarl_baselines or "", "ippo_ff_mpe.py")) or not args.jaxmarl_python:
        raise SystemExit("--against jaxmarl needs --jaxmarl-baselines (a directory with ippo_ff_mpe.py) and "
                         "--jaxmarl-python")
    with tempfile.TemporaryDirectory() as cwd:
        out = os.path.join(cwd, "curve.json")
        wall = timed([args.jaxmarl_python, os.path.join(ROOT, "tools", "reference", "jaxmarl_ippo_mpe.py"),
                      os.path.abspath(args.jaxmarl_baselines), str(steps), out], cwd, args.timeout_s,
                     "JaxMARL's IPPO")
        ret = json.load(open(out))["return"]
        return wall, ret[-1] if ret else float("nan")


def benchmarl_arm(args, steps: int) -> tuple:
    """(wall seconds, last iteration's mean episode return summed over the agents) of BenchMARL's MAPPO
    (``tools/reference/benchmarl_mappo.py``: its own default configs)."""
    if not args.benchmarl_python:
        raise SystemExit("--against benchmarl needs --benchmarl-python")
    with tempfile.TemporaryDirectory() as cwd:
        out = os.path.join(cwd, "curve.json")
        wall = timed([args.benchmarl_python, os.path.join(ROOT, "tools", "reference", "benchmarl_mappo.py"),
                      str(steps), "0", out], cwd, args.timeout_s, "BenchMARL's MAPPO")
        ret = json.load(open(out))["return"]
        return wall, ret[-1] if ret else float("nan")


def hpcmarl_arm(args, name: str, config: str, env: str, steps: int, ranks: int, overrides, cache: str) -> tuple:
    """(wall seconds of the whole mpirun, training seconds the run reports, final windowed return); ``cache``: the
    ``XDG_CACHE_HOME`` of the run (its compiled update's cache: ``hpcmarl.compiled``)."""
    log = os.path.join(args.out, f"{name}.log")
    shutil.rmtree(os.path.join(args.out, name), ignore_errors=True)  # a fresh run, not a resume of the last one
    wall = launch(ranks, os.path.join("configs", config),
                  [f"name={name}", f"output.root={args.out}", f"env.name={env}", f"train.total_env_steps={steps}",
                   "output.progress_s=10"] + list(overrides) + args.set, args.timeout_s, log,
                  env={"XDG_CACHE_HOME": cache})
    text = open(log).read()
    m = re.search(r"env steps, [\d,]+ episodes in ([\d.]+)s.*?agent (-?[\d.]+)", text)
    return wall, float(m.group(1)) if m else float("nan"), float(m.group(2)) if m else float("nan")


def layout(L: int, A: int, copies: int) -> list:
    return [f"topology.learners={L}", f"topology.actors={A}", f"env.num_envs={copies // A}"]


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--against", choices=sorted(SETUPS), default="jaxmarl")
    ap.add_argument("--jaxmarl-baselines", help="directory holding JaxMARL's ippo_ff_mpe.py")
    ap.add_argument("--jaxmarl-python", help="a Python with jaxmarl, flax, optax, distrax, hydra-core")
    ap.add_argument("--benchmarl-python", help="a Python with benchmarl, torchrl, tensordict, vmas")
    ap.add_argument("--steps", default="2m")
    ap.add_argument("--layouts", default="1:1", help="learners:actors, comma separated")
    ap.add_argument("--copies", default="128", help="env copies in all (split over the actors), comma separated")
    ap.add_argument("--pairs", type=int, default=3, help="rounds of (reference, every hpcmarl arm); the medians")
    ap.add_argument("--caches", default="cold,warm",
                    help="compile caches each hpcmarl arm runs with in every round: cold = an empty cache "
                         "(compilation counted), warm = the cache the cold run left")
    ap.add_argument("--no-shipped", action="store_true", help="leave out the shipped config's arm")
    ap.add_argument("--out", default=os.path.join(ROOT, "runs", "bench_batched_e2e"))
    ap.add_argument("--timeout-s", type=float, default=1800.0, help="hard limit per run")
    ap.add_argument("--set", nargs="*", default=[], help="config overrides for every hpcmarl arm")
    args = ap.parse_args()
    steps = parse_steps(args.steps)
    config, env, batch, work = SETUPS[args.against]
    caches = args.caches.split(",")
    if caches not in (["cold"], ["warm"], ["cold", "warm"]):
        raise SystemExit("--caches: cold, warm or cold,warm")
    os.makedirs(args.out, exist_ok=True)
    arms = {}  # name -> (learners, actors, copies)
    for lay in args.layouts.split(","):
        L, A = (int(x) for x in lay.split(":"))
        for copies in (int(x) for x in args.copies.split(",")):
            if copies % A or batch % copies:
                raise SystemExit(f"--copies {copies}: must split over {A} actors and divide {batch}")
            arms[f"{'ippo' if args.against == 'jaxmarl' else 'mappo'}_{L}x{A}_E{copies}"] = (L, A, copies)
    what = ("JaxMARL ippo_ff_mpe.py (its config, 1 seed)" if args.against == "jaxmarl" else
            "BenchMARL MAPPO (its default configs)")
    runs = {}  # (arm, cache) -> [(wall, training s, return, ratio to the round's reference)]
    refs = []
    for p in range(args.pairs):
        ref_s, ref_ret = (jaxmarl_arm if args.against == "jaxmarl" else benchmarl_arm)(args, steps)
        refs.append((ref_s, ref_ret))
        print(f"[round {p + 1}/{args.pairs}] {what}: {steps:,} env steps in {ref_s:.1f}s = {steps / ref_s:,.0f} env "
              f"steps/s; return {ref_ret:.1f}", flush=True)
        for name, (L, A, copies) in arms.items():
            cache = os.path.join(args.out, f"cache-{name}")
            for c in caches:
                if c == "cold":
                    shutil.rmtree(cache, ignore_errors=True)
                wall, train_s, ret = hpcmarl_arm(
                    args, name, config, env, steps, L + A,
                    work + layout(L, A, copies) + [f"algo.unroll_length={batch // copies}",
                                                   f"actors.overlap={str(L == 1).lower()}"], cache)
                runs.setdefault((name, c), []).append((wall, train_s, ret, ref_s / wall))
                print(f"[round {p + 1}/{args.pairs}] {name} ({c} cache): {wall:.1f}s ({train_s:.1f}s training) = "
                      f"{steps / wall:,.0f} env steps/s, {ref_s / wall:.2f}x the reference; return {ret:.1f}",
                      flush=True)
    ref_s = median([r[0] for r in refs])
    ref_sps = steps / ref_s
    rows = [[args.against, what, f"{ref_s:.1f}", "", f"{ref_sps:.0f}", "1.00",
             " / ".join(f"{r[1]:.1f}" for r in refs)]]
    for (name, c), rs in runs.items():
        L, A, copies = arms[name]
        wall = median([r[0] for r in rs])
        rows.append([f"{name} ({c})", f"{L} learner(s) + {A} actor(s), {copies} copies x {batch // copies} steps, "
                     f"{c} compile cache", f"{wall:.1f}", f"{median([r[1] for r in rs]):.1f}",
                     f"{steps / wall:.0f}", f"{median([r[3] for r in rs]):.2f}", " / ".join(f"{r[2]:.1f}" for r in rs)])
    head = caches[-1]  # the headline: warm where measured
    name = max(arms, key=lambda n: median([r[3] for r in runs[(n, head)]]))
    best = runs[(name, head)]
    line = (f"RESULT ref_sps={ref_sps:.0f} best_sps={steps / median([r[0] for r in best]):.0f} "
            f"best_ratio={median([r[3] for r in best]):.2f} best_arm={name}")
    if head == "warm" and "cold" in caches:
        line += f" best_ratio_cold={median([r[3] for r in runs[(name, 'cold')]]):.2f}"
    line += f" ref_return={median([r[1] for r in refs]):.1f} best_return={median([r[2] for r in best]):.1f}"
    if not args.no_shipped:
        L, A, copies = arms[name]
        with tempfile.TemporaryDirectory() as cache:  # compilation counted
            wall, train_s, ret = hpcmarl_arm(args, "shipped", config, env, steps, L + A, layout(L, A, copies), cache)
        sps = steps / wall
        print(f"shipped ({config}, {L}x{A}, {copies // A} copies per actor, cold cache): {wall:.1f}s = {sps:,.0f} env "
              f"steps/s, {sps / ref_sps:.2f}x the reference's median; return {ret:.1f}", flush=True)
        rows.append(["shipped", f"MAPPO {config}, {L} learner(s) + {A} actor(s), {copies // A} copies per actor, cold "
                     f"compile cache", f"{wall:.1f}", f"{train_s:.1f}", f"{sps:.0f}", f"{sps / ref_sps:.2f}",
                     f"{ret:.1f}"])
        line += f" shipped_sps={sps:.0f} shipped_ratio={sps / ref_sps:.2f}"
    print(line)
    record(__file__, sys.argv[1:], line, extra={"env": env, "steps": steps, "pairs": args.pairs, "tables": {
        "end_to_end": {"columns": ["arm", "what", "wall s (median)", "training s (median)", "env steps/s",
                                   "x reference (median of the rounds' ratios)", "final return (sum), per round"],
                       "rows": rows}}})


if __name__ == "__main__":
    main()
