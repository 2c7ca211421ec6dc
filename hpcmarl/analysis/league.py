"""Read a league run's ``run.h5 /league`` (``hpcmarl league RUN_DIR``): pool, newest ratings, payoff matrix.

The payoff matrix sums the actors' reported training games (``/league/matches``: a group's live policy
against pool members) and the league rank's evaluation games (``/league/eval``) between the same ids.
"""
from __future__ import annotations

import json
from typing import Dict

import numpy as np

from hpcmarl.league.server import member_name
from hpcmarl.storage import Run, StorageError


def league_summary(run_dir: str) -> dict:
    run = Run(run_dir)
    attrs = run.attrs()
    groups = json.loads(attrs.get("league_groups", "[]") or "[]")
    if not groups:
        raise StorageError(f"{run_dir} is not a league run (run.h5 has no league groups)")
    pool, ratings = run._table("league/pool"), run._table("league/ratings")
    matches, evals = run._table("league/matches"), run._table("league/eval")
    members = {int(m): (int(g), int(v)) for m, g, v in zip(pool.get("member", []), pool.get("group", []),
                                                             pool.get("version", []))}
    name = lambda mid: member_name(int(mid), groups, members)
    out = {"run_dir": run.dir, "groups": groups,
           "pool": [{"id": int(m), "name": name(m), "group": groups[int(g)], "version": int(v), "update": int(u),
                     "wall_time": float(w)} for m, g, v, u, w in zip(pool.get("member", []), pool.get("group", []),
                                                                     pool.get("version", []), pool.get("update", []),
                                                                     pool.get("wall_time", []))]}
    latest: Dict[int, dict] = {}
    upd = ratings.get("update", np.zeros(0))
    for i in range(len(upd)):  # rows are in time order: the last one of each member is its newest rating
        latest[int(ratings["member"][i])] = {k: float(ratings[k][i]) for k in ("update", "elo", "mu", "sigma",
                                                                               "ordinal", "games")}
    out["ratings"] = sorted(({"id": m, "name": name(m), **r} for m, r in latest.items()), key=lambda r: -r["ordinal"])
    out["outcome"] = attrs.get("league_outcome") or "competitive"
    wdl: Dict[tuple, np.ndarray] = {}
    rets: Dict[tuple, np.ndarray] = {}  # (row, column) -> [return sum, games] of the row's seats with that column

    def add(a, b, w, d, l, r):
        wdl.setdefault((a, b), np.zeros(3))[:] += (w, d, l)
        wdl.setdefault((b, a), np.zeros(3))[:] += (l, d, w)
        rets.setdefault((a, b), np.zeros(2))[:] += (r, w + d + l)

    zeros = np.zeros(len(matches.get("group", [])))
    for a, b, w, d, l, r in zip(matches.get("group", []), matches.get("member", []), matches.get("wins", []),
                                matches.get("draws", []), matches.get("losses", []), matches.get("return_sum", zeros)):
        add(-(int(a) + 1), int(b), w, d, l, r)  # the group's live policy against / with member b
    zeros = np.zeros(len(evals.get("a", [])))
    for a, b, w, d, l, r in zip(evals.get("a", []), evals.get("b", []), evals.get("wins", []), evals.get("draws", []),
                                evals.get("losses", []), evals.get("return_sum", zeros)):
        add(int(a), int(b), w, d, l, r)
    ids = sorted({a for a, _ in wdl}, key=lambda m: (m < 0, m))
    out["payoff"] = {"ids": ids, "names": [name(m) for m in ids],
                     "wins_draws_losses": [[wdl.get((a, b), np.zeros(3)).astype(int).tolist() for b in ids]
                                           for a in ids],
                     "mean_return": [[float(rets[(a, b)][0] / rets[(a, b)][1]) if rets.get((a, b), [0, 0])[1] else None
                                      for b in ids] for a in ids]}
    out["evaluation"] = [{"a": name(a), "b": name(b), "update": int(u), "wins": int(w), "draws": int(d),
                          "losses": int(l), "mean_return": float(r) / max(1, w + d + l)}
                         for a, b, u, w, d, l, r in zip(evals.get("a", []), evals.get("b", []), evals.get("update", []),
                                                        evals.get("wins", []), evals.get("draws", []),
                                                        evals.get("losses", []), evals.get("return_sum", zeros))]
    return out


def format_league(s: dict, max_members: int = 12) -> str:
    lines = [f"league run {s['run_dir']}: groups {', '.join(s['groups'])}; {len(s['pool'])} pool member(s)"]
    lines.append("pool")
    for p in s["pool"]:
        lines.append(f"  {p['id']:>4}  {p['name']:<18} update {p['update']:>6}  t {p['wall_time']:8.1f}s")
    coop = s["outcome"] == "cooperative"
    if not coop:
        lines.append("ratings (newest; OpenSkill ordinal = mu - 3 sigma)")
        lines.append(f"  {'member':<18} {'elo':>7} {'mu':>7} {'sigma':>6} {'ordinal':>8} {'games':>7}")
        for r in s["ratings"]:
            lines.append(f"  {r['name']:<18} {r['elo']:7.1f} {r['mu']:7.2f} {r['sigma']:6.2f} {r['ordinal']:8.2f} "
                         f"{int(r['games']):>7}")
    ids, names = s["payoff"]["ids"], s["payoff"]["names"]
    keep = [i for i, m in enumerate(ids) if m < 0] + [i for i, m in enumerate(ids) if m >= 0][-max_members:]
    lines.append(("cross-play: mean team return of the row with the column as partners"
                  if coop else "payoff: score of the row against the column (wins + draws/2) / games")
                 + ", games in brackets" + (f"; the newest {max_members} pool members" if len(ids) > len(keep) else ""))
    width = max([10] + [len(names[i]) for i in keep]) + 1
    lines.append(" " * width + "".join(f"{names[j][:14]:>15}" for j in keep))
    for i in keep:
        cells = []
        for j in keep:
            w, d, l = s["payoff"]["wins_draws_losses"][i][j]
            n = w + d + l
            value = s["payoff"]["mean_return"][i][j] if coop else ((w + 0.5 * d) / n if n else None)
            cells.append(f"{value:7.2f} ({n:>5})" if n and value is not None else f"{'-':>15}")
        lines.append(f"{names[i]:<{width}}" + "".join(f"{c:>15}" for c in cells))
    return "\n".join(lines)
