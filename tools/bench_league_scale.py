#!/usr/bin/env python
"""League rank at scale (no MPI): a league server state with ``--members`` synthetic pool snapshots, then the time the
league rank takes to answer its messages, calling :class:`hpcmarl.league.server.League` as ``league_main`` does.

Setup (Connect Four league config, one learner group, PFSP; timed as ``setup_s``): ``--members`` snapshots are added
one by one (their pool files are not written: a no-op writer, setup only); after each one the actors report
``--games`` training games of the live policy against members drawn uniformly from the pool, and the evaluation
matchups the league queues (``league.eval_baselines`` random + lookahead and the ``league.eval_pool`` 3 newest earlier
snapshots) are recorded with ``--eval-games`` games each. With the defaults, 10,000 members and
4 + 5 x 2 = 14 games per member: 140,000 games, about 7 pairs of players per member.

Timed (median of ``--repeat`` runs where the state allows it):

    status_s        a learner lead's status message when a checkpoint follows (the worst case): snapshot decision,
                    a new snapshot (its pool file written), rows for run.h5 /league, the league's checkpoint arrays
    status_plain_s  a status message without snapshot or checkpoint (snapshot decision + rows; ratings rows are
                    due at every update here, ``league.ratings_every=1``, after 8 games reported since the last)
    checkpoint_s    the league's checkpoint arrays alone (``League.state_arrays``); ``checkpoint_mb`` their size
    load_s          a resume from them (``League.load_state_arrays``)
    report_s        an actor's report answered: results recorded, the new assignment and its snapshot paths
    draw_s          a matchmaking draw: group 0's PFSP assignment over the pool and one opponent sampled from it
    matrix_s        the meta-game win-rate matrix of the newest ``--meta-pool`` members (what meta_nash solves)
    meta_nash_s     the meta-Nash mixture over them (the matrix and the LP)

Last line:

    RESULT members=… games=… pairs=… setup_s=… status_s=… status_plain_s=… checkpoint_s=… checkpoint_mb=… load_s=…
        report_s=… draw_s=… matrix_s=… meta_nash_s=…

    .venv/bin/python tools/bench_league_scale.py [--members 10000] [--games 4] [--eval-games 2] [--meta-pool 300]
        [--repeat 3] [--seed 0] [--skip-checkpoint]

To time another version of the league code, run this file from a copy of that tree (``git archive COMMIT | tar -x
-C DIR``, then ``cp tools/bench_league_scale.py DIR/tools/``): it imports ``hpcmarl`` from its own tree.
"""
import argparse
import statistics
import sys
import tempfile
import time

import numpy as np

from _common import ROOT, record  # noqa: F401 - ROOT: puts this tree's hpcmarl first on sys.path

from hpcmarl.config import load_config
from hpcmarl.league import server
from hpcmarl.league.server import League

C4 = ["env.name=connect_four_v3", "league.enabled=true", "algo.name=ippo"]
ATTRS = {"group": "main", "policy_group": "player", "env": "connect_four_v3", "obs_dim": 84, "n_actions": 7,
         "hidden": 8, "layers": 1}
SCORES = np.array([1.0, 0.5, 0.0])
ORDER = ("members", "games", "pairs", "setup_s", "status_s", "status_plain_s", "checkpoint_s", "checkpoint_mb",
         "load_s", "report_s", "draw_s", "matrix_s", "meta_nash_s")


def timed(fn, repeat: int = 1) -> float:
    """Median wall seconds of ``repeat`` calls of ``fn``."""
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def pairs(payoff) -> int:
    """Pairs of players with recorded games (either order counted once)."""
    if hasattr(payoff, "pairs"):
        return payoff.pairs()
    return len({tuple(sorted(p)) for p in payoff._wdl})  # the payoff table before it was kept sparse (older trees)


def status(league: League, gi: int, update: int, version: int, want_state: bool, params: np.ndarray):
    """What ``league_main`` does for a learner lead's status message (the wire left out)."""
    due = league.snapshot_due(gi, update)
    if due:
        league.add_member(gi, version, update, params, {**ATTRS, "version": version})
    rows = league.take_rows(update, False)
    return due, rows, league.state_arrays() if want_state else None


def build(league: League, members: int, games: int, eval_games: int, every: int, rng: np.random.Generator) -> int:
    """Adds ``members`` snapshots with their training and evaluation games; returns the games recorded."""
    writer, server.write_snapshot = server.write_snapshot, lambda path, params, attrs: path  # setup only
    params, n = np.zeros(10, np.float32), 0
    try:
        for k in range(members):
            update = (k + 1) * every
            mid = league.add_member(0, update, update, params, {**ATTRS, "version": update})
            opp = rng.integers(0, mid + 1, games)
            score = SCORES[rng.integers(0, 3, games)]
            league.report(0, [(int(m), float(s), 2 * float(s) - 1) for m, s in zip(opp, score)])
            n += games
            for a, b in league.eval_queue:  # what the league rank plays between messages
                w, d = int(rng.integers(0, eval_games + 1)), 0
                league.record_eval(a, b, w, d, eval_games - w, float(2 * w - eval_games))
                n += eval_games
            league.eval_queue = []
            if k % 1000 == 999:
                league.take_rows(update, False)
    finally:
        server.write_snapshot = writer
    return n


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--members", type=int, default=10_000, help="synthetic pool snapshots")
    ap.add_argument("--games", type=int, default=4, help="training games reported per new snapshot")
    ap.add_argument("--eval-games", type=int, default=2, help="games per evaluation matchup (league.eval_games)")
    ap.add_argument("--meta-pool", type=int, default=300, help="newest members in the meta-Nash matrix")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-checkpoint", action="store_true",
                    help="leave out the timings that build checkpoint arrays (status_s, checkpoint_s, load_s)")
    args = ap.parse_args()
    every = 20
    cfg = load_config(None, C4 + [f"league.eval_games={args.eval_games}", f"league.groups.0.snapshot_every={every}",
                                  "league.ratings_every=1"])  # every status writes ratings rows: the worst case
    res = {"members": args.members}
    with tempfile.TemporaryDirectory(prefix="bench_league_scale") as tmp:
        league = League(cfg, tmp, seed=args.seed)
        rng = np.random.default_rng(args.seed)
        t0 = time.perf_counter()
        res["games"] = build(league, args.members, args.games, args.eval_games, every, rng)
        res["setup_s"] = time.perf_counter() - t0
        res["pairs"] = pairs(league.payoff)
        params = np.zeros(10, np.float32)
        update = args.members * every
        times = []
        for step in range(1, min(args.repeat, every - 1) + 1):  # later updates, none of them due for a snapshot
            league.report(0, [(int(m), 1.0, 1.0) for m in rng.integers(0, args.members, 8)])  # rows to write
            times.append(timed(lambda: status(league, 0, update + step, update, False, params)))
        res["status_plain_s"] = statistics.median(times)
        if not args.skip_checkpoint:
            t0 = time.perf_counter()
            due, _, state = status(league, 0, update + every, update + every, True, params)
            res["status_s"] = time.perf_counter() - t0
            assert due, "the timed checkpoint status should take a snapshot"
            res["checkpoint_s"] = timed(league.state_arrays, args.repeat)
            res["checkpoint_mb"] = sum(np.asarray(v).nbytes for v in state.values()) / 2 ** 20
            again = League(cfg, tmp, seed=args.seed)
            res["load_s"] = timed(lambda: again.load_state_arrays(state), 1)
        results = [(int(m), float(s), 0.0) for m, s in zip(rng.integers(0, args.members, 8),
                                                          SCORES[rng.integers(0, 3, 8)])]

        def report():
            league.report(0, results)
            a = league.assignment(0)
            return {"assignment": a, "paths": league.paths(a)}

        res["report_s"] = timed(report, args.repeat)

        def draw():
            opts = league.assignment(0)["player"]
            p = np.array([q for _, q in opts], np.float64)
            return opts[int(rng.choice(len(opts), p=p / p.sum()))][0]

        res["draw_s"] = timed(draw, args.repeat)
        pool = league.lineage("player")[-args.meta_pool:]
        keys = [league.key(m) for m in pool]
        res["matrix_s"] = timed(lambda: league.payoff.matrix(keys, "win_rate"), args.repeat)
        res["meta_nash_s"] = timed(lambda: (league._nash.clear(), league.meta_nash(pool)), 1)
    res = {k: res[k] for k in ORDER if k in res}
    for k, v in res.items():
        print(f"{k:>16}  {v:.4f}" if isinstance(v, float) else f"{k:>16}  {v}")
    line = "RESULT " + " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in res.items())
    print(line)
    record(__file__, sys.argv[1:], line, seeds=[args.seed], extra={"unrounded": res})


if __name__ == "__main__":
    main()
