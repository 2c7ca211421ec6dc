#!/usr/bin/env python
"""Connect Four league benchmark: a league run and a plain self-play run with the same budget, then
fixed-seed evaluations of both final policies (``hpcmarl match`` logic, seats alternated).

    league     configs/league_c4.yaml: PFSP over the pool of the group's own snapshots + 35% self-play
    selfplay   the same config with league.groups.0.strategy=self_play (always the current policy;
               snapshots are still taken, but only for the league rank's evaluation)

Each run gets ``--budget-s`` seconds of training (``train.max_wall_s``), or ``--budget-steps`` env steps (the same
budget on any machine), on ``--ranks`` MPI ranks (1 learner, ranks - 2 actors, 1 league rank), one after the other.
Evaluations (``--games`` each):

    c4_vs_random       league policy (greedy) vs uniformly random legal moves
    c4_vs_lookahead    league policy (greedy) vs one-step lookahead (win now, else block, else random)
    league_vs_selfplay league policy vs self-play policy, both greedy, each game opened with ``--opening``
                       random moves (seeded), so that two deterministic policies play different games

Win rates are wins / games (draws count as not won). With ``--seeds 0,1,2`` every arm trains once per seed, the
baselines are reported as the median over seeds, and every league seed plays every self-play seed: the mean win
rate over those pairs with a 95% bootstrap interval over seeds. Last line:

    RESULT c4_vs_random=… c4_vs_lookahead=… selfplay_vs_lookahead=… league_vs_selfplay=… league_vs_selfplay_ci=lo,hi
        seeds=…

    .venv/bin/python tools/bench_league.py [--budget-s 1200 | --budget-steps 2m] [--ranks 4] [--games 400]
        [--seeds 0,1,2] [--out runs/bench_league]
"""
import argparse
import os
import sys

import numpy as np

from _common import ROOT, launch, parse_steps, record

from hpcmarl.league.match import match
from hpcmarl.storage import list_checkpoints


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--budget-s", type=float, default=1200.0, help="training wall-clock seconds per run")
    ap.add_argument("--budget-steps", default=None,
                    help="train every run for this many env steps instead (e.g. 2m): the same budget on any machine "
                         "and beside other work; --budget-s then only bounds each run's wall clock")
    ap.add_argument("--ranks", type=int, default=4)
    ap.add_argument("--games", type=int, default=400)
    ap.add_argument("--opening", type=int, default=2)
    ap.add_argument("--seeds", default="0", help="comma-separated training seeds; every arm trains once per seed")
    ap.add_argument("--out", default=os.path.join(ROOT, "runs", "bench_league"))
    ap.add_argument("--skip-train", action="store_true", help="evaluate the runs already in --out")
    args = ap.parse_args()
    seeds = [int(x) for x in args.seeds.split(",")]
    budget_steps = parse_steps(args.budget_steps) if args.budget_steps else 0
    cfg = os.path.join(ROOT, "configs", "league_c4.yaml")
    arms = {"league": [], "selfplay": ["league.groups.0.strategy=self_play"]}
    ckpt = {}
    for seed in seeds:
        for name, extra in arms.items():
            tag = name if len(seeds) == 1 and seed == 0 else f"{name}-s{seed}"  # one seed 0: the old layout
            run_dir = os.path.join(args.out, tag)
            if not args.skip_train:
                os.makedirs(args.out, exist_ok=True)
                t = launch(args.ranks, cfg, [f"run_dir={run_dir}", f"train.max_wall_s={args.budget_s}", f"seed={seed}",
                                             f"train.total_env_steps={budget_steps or 1_000_000_000}", "--fresh"]
                           + extra,
                           timeout=args.budget_s + 600, log_path=os.path.join(args.out, f"{tag}.log"))
                budget = f"{budget_steps:,} env steps" if budget_steps else f"{args.budget_s:.0f}s"
                print(f"{tag}: trained {budget} budget ({t:.0f}s with startup and shutdown); log "
                      f"{os.path.join(args.out, tag + '.log')}", flush=True)
            found = list_checkpoints(os.path.join(run_dir, "checkpoints"))
            if not found:
                raise SystemExit(f"{run_dir}: no checkpoint")
            ckpt[(name, seed)] = found[-1]
    n = args.games

    def play(a, b, opening, label):
        r = match(a, b, n, seed=7, opening=opening)
        print(f"{label:<30} {r['wins']:>4} won, {r['draws']:>3} drawn, {r['losses']:>4} lost of {r['episodes']} "
              f"(win rate {r['win_rate']:.3f})", flush=True)
        return r["win_rate"]

    base = {}
    for arm in arms:
        for opp in ("random", "lookahead"):
            base[(arm, opp)] = [play(ckpt[(arm, s)], opp, 0, f"{arm} s{s} vs {opp}") for s in seeds]
    # every league seed against every self-play seed: a seeds x seeds matrix of win rates
    h2h = np.array([[play(ckpt[("league", s)], ckpt[("selfplay", t)], args.opening, f"league s{s} vs selfplay s{t}")
                     for t in seeds] for s in seeds])
    lo, hi = bootstrap_ci(h2h)
    print(f"\nleague vs self-play over {len(seeds)}x{len(seeds)} seed pairs: mean win rate {h2h.mean():.3f}, "
          f"95% bootstrap CI over seeds [{lo:.3f}, {hi:.3f}]")
    for key, vals in base.items():
        print(f"{key[0]:>8} vs {key[1]:<9} median {np.median(vals):.3f}  [" + ", ".join(f"{v:.3f}" for v in vals) + "]")
    line = (f"RESULT c4_vs_random={np.median(base[('league', 'random')]):.3f} "
            f"c4_vs_lookahead={np.median(base[('league', 'lookahead')]):.3f} "
            f"selfplay_vs_lookahead={np.median(base[('selfplay', 'lookahead')]):.3f} "
            f"league_vs_selfplay={h2h.mean():.3f} league_vs_selfplay_ci={lo:.3f},{hi:.3f} seeds={len(seeds)}")
    print(line)
    record(__file__, sys.argv[1:], line, seeds=seeds,
           per_seed={f"{arm}_vs_{opp}": vals for (arm, opp), vals in base.items()},
           medians={f"{arm}_vs_{opp}": float(np.median(vals)) for (arm, opp), vals in base.items()},
           extra={"league_vs_selfplay_matrix": h2h, "games": n})  # rows: league seed, columns: self-play seed


def bootstrap_ci(m: np.ndarray, draws: int = 10_000, seed: int = 0):
    """95% percentile interval of the mean of ``m[i, j]`` (league seed i vs self-play seed j) when both seed sets
    are resampled with replacement (one seed: the interval of the games is not included, only its point)."""
    rng = np.random.default_rng(seed)
    k, l = m.shape
    means = [m[np.ix_(rng.integers(0, k, k), rng.integers(0, l, l))].mean() for _ in range(draws)]
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


if __name__ == "__main__":
    main()
