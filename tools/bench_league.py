#!/usr/bin/env python
"""Connect Four league benchmark: a league run and a plain self-play run with the same budget, then
fixed-seed evaluations of both final policies (``hpcmarl match`` logic, seats alternated).

    league     configs/league_c4.yaml: PFSP over the pool of the group's own snapshots + 35% self-play
    selfplay   the same config with league.groups.0.strategy=self_play (always the current policy;
               snapshots are still taken, but only for the league rank's evaluation)

Each run gets ``--budget-s`` seconds of training (``train.max_wall_s``) on ``--ranks`` MPI ranks (1 learner,
ranks - 2 actors, 1 league rank), one after the other on the same machine. Evaluations (``--games`` each):

    c4_vs_random       league policy (greedy) vs uniformly random legal moves
    c4_vs_lookahead    league policy (greedy) vs one-step lookahead (win now, else block, else random)
    league_vs_selfplay league policy vs self-play policy, both greedy, each game opened with ``--opening``
                       random moves (seeded), so that two deterministic policies play different games

Win rates are wins / games (draws count as not won). Last line:

    RESULT c4_vs_random=… c4_vs_lookahead=… league_vs_selfplay=…

    .venv/bin/python tools/bench_league.py [--budget-s 1200] [--ranks 4] [--games 400] [--out runs/bench_league]
"""
import argparse
import os

from _common import ROOT, launch

from hpcmarl.league.match import match
from hpcmarl.storage import list_checkpoints


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--budget-s", type=float, default=1200.0, help="training wall-clock seconds per run")
    ap.add_argument("--ranks", type=int, default=4)
    ap.add_argument("--games", type=int, default=400)
    ap.add_argument("--opening", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=os.path.join(ROOT, "runs", "bench_league"))
    ap.add_argument("--skip-train", action="store_true", help="evaluate the runs already in --out")
    args = ap.parse_args()
    cfg = os.path.join(ROOT, "configs", "league_c4.yaml")
    runs = {"league": [], "selfplay": ["league.groups.0.strategy=self_play"]}
    ckpt = {}
    for name, extra in runs.items():
        run_dir = os.path.join(args.out, name)
        if not args.skip_train:
            os.makedirs(args.out, exist_ok=True)
            t = launch(args.ranks, cfg, [f"run_dir={run_dir}", f"train.max_wall_s={args.budget_s}", f"seed={args.seed}",
                                         "train.total_env_steps=1000000000", "--fresh"] + extra,
                       timeout=args.budget_s + 600, log_path=os.path.join(args.out, f"{name}.log"))
            print(f"{name}: trained {args.budget_s:.0f}s budget ({t:.0f}s with startup and shutdown); log "
                  f"{os.path.join(args.out, name + '.log')}", flush=True)
        found = list_checkpoints(os.path.join(run_dir, "checkpoints"))
        if not found:
            raise SystemExit(f"{run_dir}: no checkpoint")
        ckpt[name] = found[-1]
    n = args.games
    res = {}
    for key, a, b, opening in (("c4_vs_random", ckpt["league"], "random", 0),
                               ("c4_vs_lookahead", ckpt["league"], "lookahead", 0),
                               ("selfplay_vs_random", ckpt["selfplay"], "random", 0),
                               ("selfplay_vs_lookahead", ckpt["selfplay"], "lookahead", 0),
                               ("league_vs_selfplay", ckpt["league"], ckpt["selfplay"], args.opening)):
        r = match(a, b, n, seed=args.seed + 7, opening=opening)
        res[key] = r["win_rate"]
        print(f"{key:<22} {r['wins']:>4} won, {r['draws']:>3} drawn, {r['losses']:>4} lost of {r['episodes']} "
              f"(win rate {r['win_rate']:.3f})  [{os.path.relpath(a, ROOT)} vs "
              f"{b if b in ('random', 'lookahead') else os.path.relpath(b, ROOT)}]", flush=True)
    print(f"RESULT c4_vs_random={res['c4_vs_random']:.3f} c4_vs_lookahead={res['c4_vs_lookahead']:.3f} "
          f"league_vs_selfplay={res['league_vs_selfplay']:.3f}")


if __name__ == "__main__":
    main()
