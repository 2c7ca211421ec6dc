#!/usr/bin/env python
"""A batched env's own step rate with random actions, for several numbers of copies, and one actor's
``Sampler.collect`` with policy inference (serial, no MPI) over the same env.

(1) ``make_batched_env(env, E)`` stepped with uniformly random legal actions for ``--seconds`` per ``E`` of
``--copies`` (after a warm-up that includes the compilation of a jitted env); (2) the sampler an actor builds from
``--config`` with ``env.name``/``env.num_envs`` set (its algorithm's inference, one unroll of ``algo.unroll_length``
steps per collect) for ``--seconds``, its copies stepped in ``--parts`` parts (``env.parts``: with 2, one part's env
step runs while the policy acts for the other; a jaxmarl: env only, else 1). Last line: ``RESULT raw_sps_<E>=…
collect_sps=… collect_ratio=… parts=…`` (collect over the raw rate at the same E; torch runs ``--threads`` threads).

    .venv/bin/python tools/bench_batched_env.py [--env jaxmarl:MPE_simple_spread_v3] [--copies 64,1024,8192]
        [--collect 1024] [--parts 2] [--config configs/simple_spread_mappo.yaml] [--seconds 3] [key=value ...]
"""
import argparse
import sys
import time

import numpy as np

from _common import ROOT, record  # noqa: F401 - ROOT: puts this checkout first on sys.path


def random_actions(venv, rng):
    out = {}
    for g in venv.spec.groups:
        if g.discrete:
            m = venv.action_mask[g.name]
            out[g.name] = (rng.random(m.shape) * m).argmax(-1)
        else:
            shape = venv.alive[g.name].shape + (g.act_dim,)
            out[g.name] = rng.uniform(g.act_low, g.act_high, shape).astype(np.float32)
    return out


def raw_rate(name: str, E: int, seconds: float, kwargs: dict) -> float:
    from hpcmarl.envs import make_batched_env

    venv = make_batched_env(name, E, 0, kwargs)
    venv.reset()
    rng = np.random.default_rng(0)
    acts = [random_actions(venv, rng) for _ in range(8)]
    t0 = time.perf_counter()
    for k in range(30):  # compilation, then one episode boundary at least for short episodes
        venv.step(acts[k % 8])
    warm = time.perf_counter() - t0
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        venv.step(acts[n % 8])
        n += 1
    dt = time.perf_counter() - t0
    print(f"{name} E={E}: {dt / n * 1e3:.2f} ms per step, {n * E / dt:,.0f} env steps/s "
          f"(warm-up incl. compile {warm:.1f}s)", flush=True)
    venv.close()
    return n * E / dt


def collect_rate(name: str, E: int, seconds: float, config: str, parts: int, overrides) -> float:
    from hpcmarl.actors import ActorPlan, make_sampler
    from hpcmarl.comm.spec import META_INDEX as M
    from hpcmarl.config import load_config

    cfg = load_config(config, [f"env.name={name}", f"env.num_envs={E}", f"env.parts={parts}"] + list(overrides))
    sampler = make_sampler(ActorPlan(cfg))[0]
    rec = sampler.spec.alloc()
    sampler.collect(rec)  # warm-up: compilation, first forward pass
    tot = env = infer = 0.0
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        sampler.collect(rec)
        m = rec["meta"]
        tot, env, infer, n = tot + m[M["t_collect"]], env + m[M["t_env"]], infer + m[M["t_infer"]], n + 1
    sps = n * cfg.algo.unroll_length * E / tot
    print(f"{name} E={E} Sampler.collect ({cfg.algo.name}, T={cfg.algo.unroll_length}, {parts} part(s)): "
          f"{sps:,.0f} env steps/s "
          f"(env {env / tot:.0%}, inference {infer / tot:.0%}, rest {(tot - env - infer) / tot:.0%})", flush=True)
    return sps


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--env", default="jaxmarl:MPE_simple_spread_v3")
    ap.add_argument("--copies", default="64,1024,8192", help="comma list of E for the raw rate")
    ap.add_argument("--collect", type=int, default=1024, help="E of the Sampler.collect measurement (0: none)")
    ap.add_argument("--parts", type=int, default=2, help="env.parts of the collect (1 for envs other than jaxmarl:)")
    ap.add_argument("--config", default="configs/simple_spread_mappo.yaml")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (an actor's default on a busy node)")
    ap.add_argument("overrides", nargs="*", help="config key=value for the collect measurement")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    kwargs = {}
    for o in args.overrides:
        k, _, v = o.partition("=")
        if k.startswith("env.kwargs."):
            import yaml

            kwargs[k[len("env.kwargs."):]] = yaml.safe_load(v)
    copies = [int(x) for x in args.copies.split(",") if x]
    raw = {E: raw_rate(args.env, E, args.seconds, kwargs) for E in copies}
    result = [f"raw_sps_{E}={raw[E]:.0f}" for E in copies]
    if args.collect:
        parts = args.parts if args.env.startswith("jaxmarl:") else 1
        sps = collect_rate(args.env, args.collect, args.seconds, args.config, parts, args.overrides)
        base = raw.get(args.collect) or raw_rate(args.env, args.collect, args.seconds, kwargs)
        result += [f"collect_sps={sps:.0f}", f"collect_ratio={sps / base:.2f}", f"parts={parts}"]
    line = "RESULT " + " ".join(result)
    print(line)
    record(__file__, sys.argv[1:], line, extra={"env": args.env, "copies": copies})


if __name__ == "__main__":
    main()
