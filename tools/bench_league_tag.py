#!/usr/bin/env python
"""Asymmetric league on MPE simple_tag_v3: predators (3 adversaries) and prey (the good agent) trained by two
learner groups against each other's pool snapshots (``configs/league_tag.yaml``), for ``--budget-s`` seconds.

Reports over training, in windows of ``--windows`` equal parts of the run (from ``run.h5 /episodes`` and
``/league/ratings``): the predators' capture rate (share of predator episodes with at least one capture, i.e.
a positive predator return: every adversary gets +10 per adversary-prey collision), captures per episode
(predator return / 30), the prey's mean return, and both live policies' Elo at the end of the window.
Last line:

    RESULT capture_first=… capture_last=… captures_first=… captures_last=… elo_predator=… elo_prey=…

    .venv/bin/python tools/bench_league_tag.py [--budget-s 600] [--ranks 5] [--windows 5]
"""
import sys

import numpy as np

from _common import record, timed_run_parser, train_timed

from hpcmarl.storage import Run


def main():
    args = timed_run_parser(__doc__.split("\n")[0], "bench_league_tag", ranks=5).parse_args()
    train_timed(args, "league_tag.yaml")
    run = Run(args.out)
    eps, ratings = run.episodes(), run._table("league/ratings")
    pred_sel = np.isfinite(eps["return/predator"])
    prey_sel = np.isfinite(eps["return/prey"])
    edges = np.linspace(0, eps["wall_time"].max() + 1e-9, args.windows + 1)
    rows = []
    print(f"{'window (s)':>14} {'pred eps':>8} {'capture':>8} {'captures':>9} {'prey ret':>9} {'Elo pred':>9} "
          f"{'Elo prey':>9}")
    for lo, hi in zip(edges[:-1], edges[1:]):
        w = (eps["wall_time"] >= lo) & (eps["wall_time"] < hi)
        pr = eps["return/predator"][w & pred_sel]
        py = eps["return/prey"][w & prey_sel]
        r = (ratings["wall_time"] < hi)
        elo = {m: ratings["elo"][r & (ratings["member"] == m)][-1] if np.any(r & (ratings["member"] == m)) else np.nan
               for m in (-1, -2)}
        rows.append(((pr > 0).mean(), pr.mean() / 30.0, py.mean(), elo[-1], elo[-2]))
        print(f"{lo:6.0f}-{hi:6.0f} {len(pr):>8} {rows[-1][0]:8.3f} {rows[-1][1]:9.3f} {rows[-1][2]:9.2f} "
              f"{rows[-1][3]:9.1f} {rows[-1][4]:9.1f}")
    line = (f"RESULT capture_first={rows[0][0]:.3f} capture_last={rows[-1][0]:.3f} captures_first={rows[0][1]:.3f} "
            f"captures_last={rows[-1][1]:.3f} elo_predator={rows[-1][3]:.1f} elo_prey={rows[-1][4]:.1f}")
    print(line)
    record(__file__, sys.argv[1:], line, extra={"tables": {"windows": {
        "columns": ["window start (s)", "window end (s)", "capture rate", "captures / episode", "prey return",
                    "Elo predator", "Elo prey"],
        "rows": [[lo, hi, *r] for lo, hi, r in zip(edges[:-1], edges[1:], rows)]}}})


if __name__ == "__main__":
    main()
