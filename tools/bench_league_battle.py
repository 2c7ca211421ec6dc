#!/usr/bin/env python
"""Symmetric two-team league on MAgent2 battle_v4 (6 vs 6, 16x16 map): one policy plays a team per episode
against pool snapshots of itself and the scripted charge player (``configs/league_battle.yaml``), for
``--budget-s`` seconds.

Reports over training, in ``--windows`` equal parts of the run: the league rank's fixed-seed evaluations of the
snapshots taken in the window (``run.h5 /league/eval``; ``eval_games`` greedy episodes each, red/blue alternated,
won by the side with more agents left) against ``random`` and ``charge`` (score = (wins + draws / 2) / games),
the training episodes' mean return of the trained team, and the live policy's Elo at the end of the window.
Last line:

    RESULT random_first=… random_last=… charge_first=… charge_last=… return_first=… return_last=… elo=…

    .venv/bin/python tools/bench_league_battle.py [--budget-s 600] [--ranks 4] [--windows 5]
"""
import sys

import numpy as np

from _common import record, timed_run_parser, train_timed

from hpcmarl.league.pool import CHARGE, RANDOM
from hpcmarl.storage import Run


def main():
    args = timed_run_parser(__doc__.split("\n")[0], "bench_league_battle", ranks=4).parse_args()
    train_timed(args, "league_battle.yaml")
    run = Run(args.out)
    eps, ev, pool, ratings = (run.episodes(), run._table("league/eval"), run._table("league/pool"),
                              run._table("league/ratings"))
    taken = dict(zip(pool["member"].astype(int), pool["wall_time"]))  # snapshot id -> when it was taken
    when = np.array([taken[int(a)] for a in ev["a"]])
    games = ev["wins"] + ev["draws"] + ev["losses"]
    edges = np.linspace(0, eps["wall_time"].max() + 1e-9, args.windows + 1)
    rows = []
    print(f"{'window (s)':>14} {'episodes':>8} {'return':>8} {'snapshots':>9} {'vs random':>9} {'vs charge':>9} "
          f"{'Elo':>7}")
    for lo, hi in zip(edges[:-1], edges[1:]):
        w = (eps["wall_time"] >= lo) & (eps["wall_time"] < hi)
        ret = eps["return/main"][w]
        score = {}
        for b in (RANDOM, CHARGE):
            s = (when >= lo) & (when < hi) & (ev["b"] == b)
            score[b] = (ev["wins"][s] + 0.5 * ev["draws"][s]).sum() / max(games[s].sum(), 1)
        live = (ratings["member"] == -1) & (ratings["wall_time"] < hi)
        elo = ratings["elo"][live][-1] if live.any() else np.nan
        n_snap = int(((np.array(list(taken.values())) >= lo) & (np.array(list(taken.values())) < hi)).sum())
        rows.append((score[RANDOM], score[CHARGE], ret.mean(), elo))
        print(f"{lo:6.0f}-{hi:6.0f} {len(ret):>8} {ret.mean():8.2f} {n_snap:>9} {score[RANDOM]:9.3f} "
              f"{score[CHARGE]:9.3f} {elo:7.1f}")
    line = (f"RESULT random_first={rows[0][0]:.3f} random_last={rows[-1][0]:.3f} charge_first={rows[0][1]:.3f} "
            f"charge_last={rows[-1][1]:.3f} return_first={rows[0][2]:.2f} return_last={rows[-1][2]:.2f} "
            f"elo={rows[-1][3]:.1f}")
    print(line)
    record(__file__, sys.argv[1:], line, extra={"tables": {"windows": {
        "columns": ["window start (s)", "window end (s)", "vs random", "vs charge", "return", "Elo"],
        "rows": [[lo, hi, *r] for lo, hi, r in zip(edges[:-1], edges[1:], rows)]}}})


if __name__ == "__main__":
    main()
