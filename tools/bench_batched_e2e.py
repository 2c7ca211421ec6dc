#!/usr/bin/env python
"""End-to-end training speed on a batched env against JaxMARL's own IPPO baseline, run in the same invocation.

Arms, each trained for ``--steps`` env steps, one after another (never two at once):

* ``jaxmarl``: JaxMARL's ``baselines/IPPO/ippo_ff_mpe.py`` with its own ``ippo_ff_mpe.yaml`` (one seed:
  ``NUM_SEEDS=1``, ``TOTAL_TIMESTEPS=--steps``), run by ``--jaxmarl-python`` from ``--jaxmarl-baselines`` (a
  checkout of JaxMARL's ``baselines/IPPO``; it needs flax, optax, distrax and hydra-core, e.g. in a virtualenv of
  its own). Its time is the whole process: imports, compilation and training.
* ``ippo_<L>x<A>_E<E>``: hpcmarl IPPO on ``jaxmarl:MPE_simple_spread_v3`` with the baseline's PPO work per sample
  (2,048 env steps per update: ``--copies`` copies in all x ``2048 / copies`` steps, 4 epochs x 4 minibatches, lr
  2.5e-4), ``L`` learners and ``A`` actors (``--layouts L:A,...``; ranks = L + A), for every ``--copies``.
* ``shipped``: ``configs/simple_spread_mappo.yaml`` (MAPPO, hpcmarl's shipped simple_spread settings) on the same
  env, in the layout of the fastest hpcmarl arm.

hpcmarl's times are the whole ``mpirun`` too (startup, compilation, checkpoints). Prints a table and ends with
``RESULT jaxmarl_sps=… best_sps=… best_ratio=… best_arm=… shipped_sps=… shipped_ratio=…`` (env steps per second
of wall time; ratio = hpcmarl / JaxMARL).

    .venv/bin/python tools/bench_batched_e2e.py --jaxmarl-baselines PATH/baselines/IPPO \\
        --jaxmarl-python PATH/bin/python [--steps 2m] [--layouts 1:1,1:2,2:2] [--copies 128,512]
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

from _common import ROOT, launch, parse_steps, record

ENV = "jaxmarl:MPE_simple_spread_v3"
BATCH = 2048  # ippo_ff_mpe.yaml: NUM_ENVS 16 x NUM_STEPS 128 env steps per update


def jaxmarl_arm(args, steps: int) -> float:
    """Wall seconds of JaxMARL's IPPO script training ``steps`` env steps (one seed)."""
    script = os.path.join(args.jaxmarl_baselines, "ippo_ff_mpe.py")
    if not os.path.isfile(script):
        raise SystemExit(f"--jaxmarl-baselines: no ippo_ff_mpe.py in {args.jaxmarl_baselines}")
    with tempfile.TemporaryDirectory() as cwd:  # hydra writes outputs/ and the script a PNG into its directory
        t0 = time.monotonic()
        p = subprocess.run([args.jaxmarl_python, script, f"TOTAL_TIMESTEPS={steps}", "NUM_SEEDS=1",
                            "WANDB_MODE=disabled"], cwd=cwd, capture_output=True, text=True,
                           timeout=args.timeout_s, env=dict(os.environ, WANDB_MODE="disabled"))
        dt = time.monotonic() - t0
    if p.returncode != 0:
        raise SystemExit(f"JaxMARL's IPPO failed (exit {p.returncode}):\n{(p.stdout + p.stderr)[-3000:]}")
    return dt


def hpcmarl_arm(args, name: str, steps: int, ranks: int, overrides) -> tuple:
    """(wall seconds of the whole mpirun, training seconds the run reports, final windowed return)."""
    log = os.path.join(args.out, f"{name}.log")
    wall = launch(ranks, "configs/simple_spread_mappo.yaml",
                  [f"name={name}", f"output.root={args.out}", f"env.name={ENV}", f"train.total_env_steps={steps}",
                   "output.progress_s=10"] + list(overrides), args.timeout_s, log)
    text = open(log).read()
    m = re.search(r"env steps, [\d,]+ episodes in ([\d.]+)s.*?agent (-?[\d.]+)", text)
    return wall, float(m.group(1)) if m else float("nan"), float(m.group(2)) if m else float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jaxmarl-baselines", required=True, help="directory holding JaxMARL's ippo_ff_mpe.py")
    ap.add_argument("--jaxmarl-python", required=True, help="a Python with jaxmarl, flax, optax, distrax, hydra-core")
    ap.add_argument("--steps", default="2m")
    ap.add_argument("--layouts", default="1:1,1:2,2:2", help="learners:actors, comma separated")
    ap.add_argument("--copies", default="128,512", help="env copies in all (split over the actors), comma separated")
    ap.add_argument("--out", default=os.path.join(ROOT, "runs", "bench_batched_e2e"))
    ap.add_argument("--timeout-s", type=float, default=1800.0, help="hard limit per run")
    args = ap.parse_args()
    steps = parse_steps(args.steps)
    os.makedirs(args.out, exist_ok=True)

    jax_s = jaxmarl_arm(args, steps)
    jax_sps = steps / jax_s
    print(f"jaxmarl IPPO (ippo_ff_mpe.yaml, 1 seed): {steps:,} env steps in {jax_s:.1f}s = {jax_sps:,.0f} env steps/s",
          flush=True)
    rows = [["jaxmarl", "JaxMARL ippo_ff_mpe.py", f"{jax_s:.1f}", "", f"{jax_sps:.0f}", "1.00", ""]]
    best = None
    for layout in args.layouts.split(","):
        L, A = (int(x) for x in layout.split(":"))
        for copies in (int(x) for x in args.copies.split(",")):
            if copies % A or BATCH % copies:
                raise SystemExit(f"--copies {copies}: must split over {A} actors and divide {BATCH}")
            name = f"ippo_{L}x{A}_E{copies}"
            wall, train_s, ret = hpcmarl_arm(args, name, steps, L + A, [
                "algo.name=ippo", f"topology.learners={L}", f"topology.actors={A}", f"env.num_envs={copies // A}",
                f"algo.unroll_length={BATCH // copies}", "algo.epochs=4", "algo.minibatches=4", "algo.lr=2.5e-4"])
            sps = steps / wall
            print(f"{name}: {wall:.1f}s ({train_s:.1f}s training) = {sps:,.0f} env steps/s, "
                  f"{sps / jax_sps:.2f}x JaxMARL; return {ret:.1f}", flush=True)
            rows.append([name, f"IPPO {L} learner(s) + {A} actor(s), {copies} copies x {BATCH // copies} steps",
                         f"{wall:.1f}", f"{train_s:.1f}", f"{sps:.0f}", f"{sps / jax_sps:.2f}", f"{ret:.1f}"])
            if best is None or sps > best[1]:
                best = (name, sps, L, A, copies)
    name, best_sps, L, A, copies = best
    wall, train_s, ret = hpcmarl_arm(args, "shipped", steps, L + A, [
        f"topology.learners={L}", f"topology.actors={A}", f"env.num_envs={copies // A}"])
    shipped_sps = steps / wall
    print(f"shipped (simple_spread_mappo.yaml, {L}x{A}, {copies // A} copies per actor): {wall:.1f}s = "
          f"{shipped_sps:,.0f} env steps/s, {shipped_sps / jax_sps:.2f}x JaxMARL; return {ret:.1f}", flush=True)
    rows.append(["shipped", f"MAPPO simple_spread_mappo.yaml, {L} learner(s) + {A} actor(s), {copies // A} copies "
                 "per actor", f"{wall:.1f}", f"{train_s:.1f}", f"{shipped_sps:.0f}", f"{shipped_sps / jax_sps:.2f}",
                 f"{ret:.1f}"])
    line = (f"RESULT jaxmarl_sps={jax_sps:.0f} best_sps={best_sps:.0f} best_ratio={best_sps / jax_sps:.2f} "
            f"best_arm={name} shipped_sps={shipped_sps:.0f} shipped_ratio={shipped_sps / jax_sps:.2f}")
    print(line)
    record(__file__, sys.argv[1:], line, extra={"env": ENV, "steps": steps, "tables": {"end_to_end": {
        "columns": ["arm", "what", "wall s", "training s", "env steps/s", "x JaxMARL", "final return"],
        "rows": rows}}})


if __name__ == "__main__":
    main()
