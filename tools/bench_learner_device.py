#!/usr/bin/env python
"""Learner update time on the CPU against a CUDA GPU (``learner.device``), same machine, same process.

For each arm (a shipped config with overrides, ``label=config.yaml[:key=value,…]``) it collects real unrolls of the
config's env (its ``env.num_envs`` copies x ``algo.unroll_length`` steps, random initial policy), builds the
config's learner on each device and times ``learner.update`` on them: the median over ``--reps`` updates after
``--warmup`` (value-based learners: after the replay holds ``learning_starts`` episodes), with the GPU synchronised
before each clock read. An arm with ``learner.compile=true`` compiles the update (``hpcmarl.compiled``,
compiled in the warm-up; ``auto`` and ``false`` time it uncompiled, as one learner's update); the time of the first
update is reported too. The CPU learner uses ``--threads`` torch threads (default: every core). Where torch sees no
GPU it times the CPU only and says so. Ends with

    RESULT <label>_cpu_ms=… <label>_cuda_ms=… <label>_speedup=… … gpu=<name>

(ms per update; speedup = CPU time / GPU time) and writes a record (docs/development/benchmarks.md#learners-on-a-gpu).

    .venv/bin/python tools/bench_learner_device.py [--arms mappo=simple_spread_mappo.yaml …] [--reps 20]
"""
import argparse
import os
import statistics
import sys
import time

import torch

from _common import ROOT, parse_arm_spec, record

ARMS = [  # the shipped configs' learners; smax_mappo's network and batch on simple_spread (SMAX needs the jax extra)
    "mappo=simple_spread_mappo.yaml",
    "rmappo_smax_size=simple_spread_mappo.yaml:algo.recurrent=true,algo.agent_id=true,algo.critic_input=state,"
    "algo.hidden=128,algo.lr=1e-3,algo.epochs=5,algo.minibatches=2,env.num_envs=64,algo.unroll_length=64",
    "matrace=matrace_spread.yaml",
    "qmix=qmix_spread.yaml",
    "mast=mast_spread.yaml",
]


def collect(cfg, n: int):
    """``n`` unroll records of the config's env, made by its actor-side policy at initialisation."""
    from hpcmarl.algos import base as algos
    from hpcmarl.algos.base import make_inference
    from hpcmarl.comm.spec import unroll_spec
    from hpcmarl.envs import make_batched_env
    from hpcmarl.sampler import Sampler

    venv = make_batched_env(cfg.env.name, cfg.env.num_envs, cfg.seed, cfg.env.kwargs,
                            with_state=algos.uses_state(cfg.algo))
    try:
        pol = make_inference(venv.spec, cfg.algo)
        if hasattr(pol, "epsilon"):
            pol.epsilon = 1.0
        uspec = unroll_spec(venv.spec, cfg.algo.unroll_length, cfg.env.num_envs, algos.rnn_hidden(cfg.algo))
        sampler = Sampler(venv, pol, uspec, cfg.algo.unroll_length)
        return venv.spec, [sampler.collect(uspec.alloc()) for _ in range(n)]
    finally:
        venv.close()


def time_updates(cfg, spec, records, device, warmup: int, reps: int):
    """(median seconds of one ``update``, seconds of the first one) (its env steps: one record's)."""
    from hpcmarl.algos import base as algos

    learner = algos.get(cfg.algo.name).make_learner(spec, cfg.algo, device, seed=cfg.seed, init_seed=cfg.seed)
    if cfg.learner.compile is True and not getattr(learner, "compile_update", lambda: False)():
        raise SystemExit(f"learner.compile=true: {cfg.algo.name}'s learner here has no compiled update")
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    i, steps = 0, 0

    def one():
        nonlocal i, steps
        rec = records[i % len(records)]
        i += 1
        steps += int(rec["meta"][3])
        return learner.update([rec], env_steps=steps)

    sync()
    t0 = time.perf_counter()
    one()  # compiles a compiled update
    sync()
    first = time.perf_counter() - t0
    for _ in range(warmup - 1):
        one()
    if not algos.get(cfg.algo.name).on_policy:  # fill the replay first: before that an update trains nothing
        for _ in range(10_000):
            if one().get("train_steps", 1) > 0:
                break
    times = []
    for _ in range(reps):
        sync()
        t0 = time.perf_counter()
        one()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), first


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arms", nargs="+", default=ARMS,
                    help="label=config.yaml[:key=value,…] as in bench_sample_efficiency (configs/ if relative)")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--records", type=int, default=4, help="distinct unrolls cycled through")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads of the CPU learner")
    a = ap.parse_args(argv)
    from hpcmarl.config import load_config

    torch.set_num_threads(a.threads)
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    if gpu is None:
        print("torch sees no CUDA device: timing the CPU learner only", file=sys.stderr)
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if gpu else [])
    fields, rows = [], []
    for text in a.arms:
        label, config, _, overrides = parse_arm_spec(text)  # a layout's ranks do not matter here
        cfg = load_config(os.path.join(ROOT, "configs", config), overrides + ["learner.device=cpu"])
        spec, records = collect(cfg, a.records)
        env_steps = int(records[0]["meta"][3])
        timed = {d.type: time_updates(cfg, spec, records, d, max(1, a.warmup), a.reps) for d in devices}
        ms = {k: 1e3 * v[0] for k, v in timed.items()}
        first_ms = 1e3 * timed["cpu"][1]
        cuda = ms.get("cuda")
        speedup = ms["cpu"] / cuda if cuda else None
        print(f"{label}: {env_steps} env steps per update; CPU ({a.threads} threads) {ms['cpu']:.1f} ms (first "
              f"{first_ms:.0f} ms)"
              + (f", {gpu} {cuda:.1f} ms: {speedup:.2f}x" if cuda else ""), flush=True)
        fields += [f"{label}_cpu_ms={ms['cpu']:.2f}", f"{label}_cpu_first_ms={first_ms:.0f}"] + (
            [f"{label}_cuda_ms={cuda:.2f}", f"{label}_speedup={speedup:.2f}"] if cuda else [])
        rows.append([label, text.partition("=")[2], env_steps, round(ms["cpu"], 2), round(first_ms),
                     round(cuda, 2) if cuda else None, round(speedup, 2) if speedup else None])
    line = "RESULT " + " ".join(fields) + f" gpu={(gpu or 'none').replace(' ', '_')}"
    print(line)
    record(__file__, sys.argv[1:] if argv is None else argv, line,
           extra={"gpu": gpu, "torch": torch.__version__, "cuda": torch.version.cuda, "cpu_threads": a.threads,
                  "tables": {"update time": {
                      "columns": ["arm", "config", "env steps per update", "CPU ms", "CPU first update ms",
                                  "GPU ms", "speedup"],
                      "rows": rows}}})


if __name__ == "__main__":
    main()
