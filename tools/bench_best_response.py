#!/usr/bin/env python
"""How good is one learned best response? PSRO's oracle measured exactly, in seconds instead of a league run.

Takes a league run on an OpenSpiel game (``kuhn_poker``, ``leduc_poker``): the mixture over the first K snapshots of
its pool (meta-Nash over their exact payoffs, as ``league.meta_game: exact`` plays it, or ``--mixture uniform``) is
held fixed, and a fresh learner with the run's algorithm config (plus ``key=value`` overrides) trains against it for
``--updates`` updates in this process (no MPI), as a league best response does between two snapshots. Every quarter
of the way its policy, played as the run's snapshots are (greedily with ``snapshot_greedy``), is scored exactly: its
expected gain against the mixture (seats averaged), and that as a fraction of the gain of OpenSpiel's exact best
response (half the mixture's NashConv). A fraction near 1 means the oracle is as good as an exact one; near 0, the
league adds snapshots that do not exploit the mixture, and its NashConv stalls.

    .venv/bin/python tools/bench_best_response.py runs/league_leduc --members 10,20,40 --seeds 0,1,2
        [--updates 80] [--envs 64] [--mixture meta_nash|uniform] [--warm] [algo.entropy_coef=0.05 ...]

Prints a table and ``RESULT br_fraction=<median over every K and seed> k<K>=<median over seeds> ...``.
"""
import argparse
import os
import sys
import time

import numpy as np

from _common import ROOT, record  # noqa: F401  (ROOT: puts the repository on sys.path)

from bench_exploitability import best_response


def mixture_of(run_dir: str, group: str, k: int, mixture: str, meter):
    """``(files, weights, table)``: the first ``k`` pool snapshots of ``group`` in ``run_dir``, their mixture weights
    and the mixture's tabular behaviour strategy."""
    from hpcmarl.league.exploitability import exact_payoffs
    from hpcmarl.league.matchmaking import zero_sum_nash
    from hpcmarl.league.pool import policy_from, read_policy, run_pool

    files = run_pool(run_dir, group)[1][:k]
    if len(files) < k:
        raise SystemExit(f"{run_dir}: the pool has {len(files)} snapshot(s), fewer than --members {k}")
    tables = [meter.probabilities(policy_from(*read_policy(f)), ("pool", f)) for f in files]
    w = zero_sum_nash(exact_payoffs(meter, tables)) if mixture == "meta_nash" else np.ones(k)
    w = np.maximum(w, 0.0)
    w /= w.sum()
    return files, w, meter.mixture(tables, w, [("pool", f) for f in files])


def train_best_response(cfg, files, weights, meter, target, updates: int, envs: int, seed: int, greedy: bool,
                        warm: bool = False, points: int = 4):
    """Train a fresh learner of ``cfg.algo`` (with ``warm``, its policy set to the newest of ``files``) against
    ``files`` drawn with ``weights`` (one member per episode) for ``updates`` updates; returns the policy's exact gain
    against ``target`` at ``points`` evenly spaced updates."""
    import torch

    from hpcmarl.algos.base import get, make_inference
    from hpcmarl.comm.spec import unroll_spec
    from hpcmarl.league.pool import PolicyBank, read_policy
    from hpcmarl.league.seats import SeatVecEnv
    from hpcmarl.models import assign_flat
    from hpcmarl.sampler import Sampler

    torch.set_num_threads(1)  # as on an actor and a learner (learner.threads): small networks, no thread contention
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    g = cfg.league.groups[0]
    bank = PolicyBank(None, rng, capacity=len(files))
    bank.paths = dict(enumerate(files))
    venv = SeatVecEnv(cfg.env.name, envs, seed, cfg.env.kwargs, cfg.policy_map, g.policy_group, g.name,
                      cfg.league.seats, lambda i: {g.policy_group: int(rng.choice(len(weights), p=weights))}, bank)
    policy = make_inference(venv.spec, cfg.algo)
    learner = get(cfg.algo.name).make_learner(venv.spec, cfg.algo, "cpu", seed=seed, init_seed=seed)
    # the policy network of a PPO learner (ippo/mappo) starts as the newest snapshot; critic and optimizer fresh
    if warm:
        if not hasattr(learner, "model"):
            raise SystemExit(f"--warm needs a PPO learner (ippo, mappo), not {cfg.algo.name}")
        assign_flat(learner.model.policy_parameters(), read_policy(files[-1])[0])
    spec = unroll_spec(venv.spec, cfg.algo.unroll_length, envs)
    rec, sampler = spec.alloc(), Sampler(venv, policy, spec, cfg.algo.unroll_length)
    gains, at = [], {round(updates * (i + 1) / points) for i in range(points)}
    for u in range(updates):
        policy.load(learner.policy_flat(), u)
        sampler.collect(rec)
        learner.update([rec])
        if u + 1 in at:
            policy.load(learner.policy_flat(), u + 1)
            policy.greedy = greedy
            gains.append(float(meter.values(meter.probabilities(policy), [target])[0]))
            policy.greedy = False
    venv.close()
    return gains


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", help="a league run directory on an OpenSpiel game (its config.yaml and pool/)")
    ap.add_argument("--members", default="10,20,40", help="pool sizes K: the mixture is over the first K snapshots")
    ap.add_argument("--mixture", choices=("meta_nash", "uniform"), default="meta_nash")
    ap.add_argument("--updates", type=int, default=80, help="updates per best response (the config's snapshot_every)")
    ap.add_argument("--envs", type=int, default=0,
                    help="env copies per update (default: 2 x env.num_envs, the shipped 4-rank layout's 2 actors)")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--warm", action="store_true",
                    help="start from the newest of the K snapshots' policy instead of the restart weights (PPO)")
    ap.add_argument("overrides", nargs="*", help="key=value changes to the run's config (algo.entropy_coef=0.05)")
    args = ap.parse_intermixed_args()

    from hpcmarl.config import derive, load_config
    from hpcmarl.league.exploitability import NashConv, openspiel_game

    cfg_path = os.path.join(args.run, "config.yaml")
    if not os.path.isfile(cfg_path):
        raise SystemExit(f"{args.run}: no config.yaml (a run directory of hpcmarl train, e.g. runs/league_leduc)")
    seeds = [int(s) for s in args.seeds.split(",")]
    base = load_config(cfg_path, trusted=False)  # the run's saved config: nothing it names is imported
    meter = NashConv(openspiel_game(base.env.name, base.env.kwargs))
    fractions, per_k, per_seed = [], {}, {}
    print(f"{'K':>4} {'mixture NashConv':>17} {'exact BR gain':>14}  learned gain per seed (at 1/4, 1/2, 3/4, all "
          f"of {args.updates} updates) -> fraction of exact at the end", flush=True)
    for k in [int(x) for x in args.members.split(",")]:
        files, w, target = mixture_of(args.run, base.league.groups[0].name, k, args.mixture, meter)
        exact = float(meter.values(best_response(meter, target), [target])[0])
        nash_conv, row = meter(target), []
        for seed in seeds:
            cfg = load_config(cfg_path, list(args.overrides) + [f"seed={seed}"], trusted=False)
            derive(cfg)
            t0 = time.monotonic()
            gains = train_best_response(cfg, files, w, meter, target, args.updates,
                                        args.envs or 2 * cfg.env.num_envs, seed, cfg.league.groups[0].snapshot_greedy,
                                        args.warm)
            frac = gains[-1] / exact if exact > 0 else float("nan")
            row.append(frac)
            print(f"{k:>4} {nash_conv:>17.3f} {exact:>14.3f}  seed {seed}: "
                  f"{', '.join(f'{x:.3f}' for x in gains)} -> {frac:.0%} ({time.monotonic() - t0:.0f} s)", flush=True)
        per_k[k] = float(np.median(row))
        per_seed[f"k{k}"] = {"br_fraction": row, "mixture_nash_conv": nash_conv, "exact_br_gain": exact}
        fractions += row
    line = "RESULT br_fraction=%.3f %s" % (float(np.median(fractions)),
                                           " ".join(f"k{k}={v:.3f}" for k, v in per_k.items()))
    print(line)
    record(__file__, sys.argv[1:], line, seeds=seeds, per_seed={k: {"br_fraction": v["br_fraction"]}
                                                                for k, v in per_seed.items()},
           medians={f"k{k}": v for k, v in per_k.items()},
           extra={k: {"mixture_nash_conv": v["mixture_nash_conv"], "exact_br_gain": v["exact_br_gain"]}
                  for k, v in per_seed.items()})


if __name__ == "__main__":
    main()
