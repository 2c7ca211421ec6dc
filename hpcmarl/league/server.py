"""The league rank's state (no MPI): the pool of frozen snapshots, snapshot decisions, per-episode opponent
assignments, reported results, payoff table, ratings and fixed-seed evaluation matches.

Member ids: pool snapshots ``0, 1, ...`` in the order they were added; the current (live) policy of learner
group ``i`` is ``-(i + 1)``; the scripted baselines are ``RANDOM`` (-100), ``LOOKAHEAD`` (-101) and
``CHARGE`` (-102).
Everything that goes to ``run.h5 /league`` is numeric rows (see :data:`TABLES`); names are derived from the
member table and the ``league_groups`` attribute.
"""
from __future__ import annotations

import time
from typing import Dict, List, Optional, Tuple

import numpy as np

from hpcmarl.league.matchmaking import OUTCOME_INDEX, Matchmaker, Payoff, meta_nash, zero_sum_nash
from hpcmarl.league.pool import BASELINE_IDS, BASELINE_NAMES, RANDOM, snapshot_path, write_snapshot
from hpcmarl.league.ratings import Ratings
from hpcmarl.league.seats import SELF

TABLES = {
    "league/pool": {k: ((), "f8") for k in ("member", "group", "version", "update", "wall_time")},
    "league/matches": {k: ((), "f8") for k in ("update", "wall_time", "group", "member", "wins", "draws", "losses",
                                                "return_sum")},
    "league/ratings": {k: ((), "f8") for k in ("update", "wall_time", "member", "elo", "mu", "sigma", "ordinal",
                                                "games")},
    "league/eval": {k: ((), "f8") for k in ("update", "wall_time", "a", "b", "wins", "draws", "losses", "return_sum")},
    # OpenSpiel games (league.exploitability_every): NashConv of the newest snapshot ``member`` and of the uniform and
    # meta-Nash mixtures over the ``pool`` members of its lineage
    "league/exploitability": {k: ((), "f8") for k in ("update", "wall_time", "member", "pool", "latest", "uniform",
                                                      "meta_nash")},
}


def live_id(gi: int) -> int:
    return -(gi + 1)


def member_name(mid: int, groups: List[str], members: Dict[int, Tuple[int, int]]) -> str:
    """``members``: id -> (group index, version)."""
    if mid in BASELINE_NAMES:
        return BASELINE_NAMES[mid]
    if mid < 0:
        return f"{groups[-mid - 1]}(live)"
    gi, version = members[mid]
    return f"{groups[gi]}-v{version}"


class League:
    def __init__(self, cfg, run_dir: str, seed: int = 0, clock=time.monotonic):
        self.cfg, self.lc, self.run_dir = cfg, cfg.league, run_dir
        self.rated = self.lc.outcome == "competitive"  # cooperative leagues record team returns, not ratings
        self.groups = self.lc.groups
        self.names = [g.name for g in self.groups]
        self.rng = np.random.default_rng(seed)
        self.mm = [Matchmaker(g.strategy, self.rng, **({"weighting": g.pfsp_weighting} if g.strategy == "pfsp" else {}))
                   for g in self.groups]
        self.members: Dict[int, dict] = {}  # id -> group, version, update, wall_time, path
        self.payoff = Payoff()
        self.ratings = Ratings(k=self.lc.elo_k)
        self.recent: Dict[Tuple[int, int], float] = {}  # (group, member) -> moving average score
        self.last_snapshot = [None] * len(self.groups)  # update of each group's newest snapshot
        self.update = 0
        self.clock, self.t0 = clock, clock()
        self.rows: Dict[str, list] = {k: [] for k in TABLES}
        self.pending: Dict[Tuple[int, int], np.ndarray] = {}  # (group, member) -> wins, draws, losses since last rows
        self.eval_queue: List[Tuple[int, int]] = []
        self.games = 0
        self.self_games = 0
        self.rated_games: Dict[str, int] = {}  # games of each member when its last ratings row was written
        self.rows_update = None
        self.evals = 0  # evaluation results recorded (the meta-Nash cache key)
        self._nash: Dict[tuple, np.ndarray] = {}
        # OpenSpiel games: snapshots still to be measured (member, with NashConv?), exact payoffs between measured ones
        self.measure_queue: List[Tuple[int, bool]] = []
        self.exact: Dict[Tuple[int, int], float] = {}
        self.measured: set = set()
        # kept up to date per new member / reported game, so no message walks the whole pool or payoff table:
        self._lineage: Dict[str, List[int]] = {}  # policy group -> pool members that play it, oldest first
        self._of_group: List[List[int]] = [[] for _ in self.groups]  # group -> its snapshots, oldest first
        self._recent_pool: List[Dict[int, float]] = [{} for _ in self.groups]  # self.recent of the pool members
        self._rated: set = set()  # member names whose ratings may have changed since their last ratings row
        self._ids_of: Dict[str, List[int]] = {}  # member name -> member ids (one, unless a version repeats)
        for gi in range(len(self.groups)):
            self.ratings.add(self.key(live_id(gi)))

    # ---- names -------------------------------------------------------------------------------------
    def key(self, mid: int) -> str:
        d = self.members.get(mid)
        return member_name(mid, self.names, {mid: (d["group"], d["version"])} if d else {})

    def wall(self) -> float:
        return self.clock() - self.t0

    # ---- pool ----------------------------------------------------------------------------------------
    def lineage(self, policy_group: str) -> List[int]:
        """Pool members that play ``policy_group`` (snapshots of the groups that train it), oldest first; the
        newest ``league.pool_max`` of them when that is set."""
        out = self._lineage.get(policy_group, [])
        return out[-self.lc.pool_max:] if self.lc.pool_max else list(out)

    def newest(self, gi: int) -> Optional[int]:
        mine = self._of_group[gi]
        return mine[-1] if mine else None

    def win_rate_vs_pool(self, gi: int) -> float:
        """Mean moving-average score of group ``gi``'s live policy against the pool members it has met."""
        vals = list(self._recent_pool[gi].values())  # self.recent's values of (gi, member >= 0), in its order
        return float(np.mean(vals)) if vals else 0.0

    def _index_member(self, mid: int) -> None:
        """Adds member ``mid`` (in ``self.members``) to the lineage and per-group indices."""
        gi = self.members[mid]["group"]
        self._lineage.setdefault(self.groups[gi].policy_group, []).append(mid)
        self._of_group[gi].append(mid)
        self._ids_of.setdefault(self.key(mid), []).append(mid)
        self._rated.add(self.key(mid))

    def snapshot_due(self, gi: int, update: int) -> bool:
        g, last = self.groups[gi], self.last_snapshot[gi]
        if last is None:
            return True
        if g.snapshot_every and update - last >= g.snapshot_every:
            return True
        return bool(g.snapshot_win_rate and update - last >= g.snapshot_min_updates
                    and self.win_rate_vs_pool(gi) >= g.snapshot_win_rate)

    def add_member(self, gi: int, version: int, update: int, params: np.ndarray, attrs: dict) -> int:
        mid = len(self.members)
        path = snapshot_path(self.run_dir, self.names[gi], version)
        write_snapshot(path, params, {**attrs, "member": mid, "update": update})
        self.members[mid] = dict(group=gi, version=version, update=update, wall_time=self.wall(), path=path)
        self._index_member(mid)
        self.last_snapshot[gi] = update
        live = self.key(live_id(gi))
        self.ratings.add(self.key(mid))  # a snapshot starts with its live policy's ratings
        self.ratings.elo[self.key(mid)] = self.ratings.elo[live]
        self.ratings.skill[self.key(mid)] = self.ratings.model.rating(mu=self.ratings.skill[live].mu,
                                                                       sigma=self.ratings.skill[live].sigma,
                                                                       name=self.key(mid))
        self.rows["league/pool"].append((mid, gi, version, update, self.wall()))
        n_snap = len(self._of_group[gi])
        if self.lc.eval_every and n_snap % self.lc.eval_every == 0:
            self.eval_queue += [(mid, BASELINE_IDS[b]) for b in self.lc.eval_baselines]
            others = [m for m in self.lineage(self.opponent_groups(gi)[0]) if m != mid]
            self.eval_queue += [(mid, m) for m in others[-self.lc.eval_pool:]] if self.lc.eval_pool else []
        nashconv = bool(self.lc.exploitability_every and n_snap % self.lc.exploitability_every == 0)
        if nashconv or self.lc.meta_game == "exact":
            self.measure_queue.append((mid, nashconv))
        return mid

    # ---- assignments ---------------------------------------------------------------------------------
    def opponent_groups(self, gi: int) -> List[str]:
        """Policy groups whose seats group ``gi``'s actors fill with members."""
        pg = self.groups[gi].policy_group
        others = [p for p in dict.fromkeys(g.policy_group for g in self.groups) if p != pg]
        return ([pg] if self.lc.seats != "per_group" else []) + others

    def assignment(self, gi: int) -> Dict[str, List[Tuple[int, float]]]:
        """Per opponent policy group: ``[(member id, probability), ...]`` actors sample each episode from."""
        g = self.groups[gi]
        out = {}
        for pg in self.opponent_groups(gi):
            own = pg == g.policy_group
            pool = self.lineage(pg)
            if pg == self.groups[0].policy_group:  # scripted members, when configured
                pool += [BASELINE_IDS[b] for b in self.lc.pool_baselines]
            if g.strategy == "exploiter":
                target = self.newest(self.names.index(g.exploits))
                out[pg] = [(target, 1.0)] if target is not None else [(SELF if own else RANDOM, 1.0)]
                continue
            if not pool:
                out[pg] = [(SELF if own else RANDOM, 1.0)]
                continue
            if g.strategy == "self_play":
                out[pg] = [(SELF, 1.0)] if own else [(pool[-1], 1.0)]
                continue
            probs = (self.meta_nash(pool) if g.strategy == "meta_nash" else
                     self.mm[gi].probabilities([str(m) for m in pool], lambda m: self.recent.get((gi, int(m)), 0.5)))
            share = g.self_play if own else 0.0
            out[pg] = (([(SELF, share)] if share > 0 else [])
                       + [(m, float(p) * (1 - share)) for m, p in zip(pool, probs)])
        return out

    def meta_nash(self, pool: List[int]) -> np.ndarray:
        """Nash mixture over ``pool`` of the members' payoffs against each other (``league.meta_game``: win rates or
        mean returns from evaluation matches, or exact expected returns of the measured members), recomputed when
        new results arrive."""
        key = (tuple(pool), self.evals, len(self.measured))
        if key not in self._nash:
            if len(self._nash) > 64:
                self._nash.clear()
            if self.lc.meta_game == "exact":
                known = [i for i, m in enumerate(pool) if m in self.measured]
                x = np.zeros(len(pool))
                if known:
                    ids = [pool[i] for i in known]
                    x[known] = zero_sum_nash(np.array([[self.exact.get((a, b), 0.0) for b in ids] for a in ids]))
                else:
                    x[:] = 1.0 / len(pool)
            else:
                m = self.payoff.matrix([self.key(m) for m in pool], self.lc.meta_game)
                x = meta_nash(m) if self.lc.meta_game == "win_rate" else zero_sum_nash(m)
            self._nash[key] = x
        return self._nash[key]

    def measure(self, mid: int, want_nashconv: bool, meter, policy) -> Dict[str, float]:
        """OpenSpiel games (:mod:`hpcmarl.league.exploitability`): with ``league.meta_game: exact`` the exact payoffs
        of snapshot ``mid`` against the measured members of its lineage; with ``want_nashconv`` the NashConv of
        ``mid`` and of the uniform and meta-Nash mixtures over its lineage up to ``mid`` (a
        ``league/exploitability`` row). ``policy(member)`` -> its Inference (loaded only when not yet tabulated)."""
        from hpcmarl.league.exploitability import pool_nash_conv

        pool = [m for m in self.lineage(self.groups[self.members[mid]["group"]].policy_group) if m <= mid]
        probs = {m: meter.probs[m] if m in meter.probs else meter.probabilities(policy(m), m) for m in pool}
        if self.lc.meta_game == "exact":
            others = [m for m in pool if m in self.measured and m != mid]
            for m, v in zip(others, meter.values(probs[mid], [probs[m] for m in others])):
                self.exact[(mid, m)], self.exact[(m, mid)] = float(v), -float(v)
            self.measured.add(mid)
        if not want_nashconv:
            return {}
        vals = pool_nash_conv(meter, probs, mid, self.meta_nash(pool))
        self.rows["league/exploitability"].append((self.update, self.wall(), mid, len(pool), vals["latest"],
                                                   vals["uniform"], vals["meta_nash"]))
        return vals

    def paths(self, assignment) -> Dict[int, str]:
        return {m: self.members[m]["path"] for opts in assignment.values() for m, _ in opts if m >= 0}

    # ---- results ---------------------------------------------------------------------------------------
    def report(self, gi: int, results: List[Tuple[int, float, float]]) -> None:
        """Finished episodes of group ``gi``'s actors: ``(member of the other seats, score, return)``, score 1 win,
        0.5 draw, 0 loss (cooperative: 0.5, and the return is the team's)."""
        step = self.lc.win_rate_step
        for mid, score, ret in results:
            mid = int(mid)
            if mid == SELF:
                self.self_games += 1
                continue
            self.games += 1
            if self.rated:
                a, b = self.key(live_id(gi)), self.key(mid)
                self.payoff.record(a, b, score, ret)
                self.ratings.record(a, b, score)
                self.recent[(gi, mid)] = (1 - step) * self.recent.get((gi, mid), 0.5) + step * score
                self._rated.add(b)
                if mid >= 0:
                    self._recent_pool[gi][mid] = self.recent[(gi, mid)]
            row = self.pending.setdefault((gi, mid), np.zeros(4))
            row[OUTCOME_INDEX[float(score)]] += 1
            row[3] += ret

    def record_eval(self, a: int, b: int, wins: int, draws: int, losses: int, return_sum: float = 0.0) -> None:
        self.rows["league/eval"].append((self.update, self.wall(), a, b, wins, draws, losses, return_sum))
        self.evals += 1
        if not self.rated:
            return
        ka, kb = self.key(a), self.key(b)
        self._rated.update((ka, kb))
        self.payoff.add_return(ka, kb, return_sum)
        for score, n in ((1.0, wins), (0.5, draws), (0.0, losses)):
            for _ in range(n):
                self.payoff.record(ka, kb, score)
                self.ratings.record(ka, kb, score)

    def take_rows(self, update: int, final: bool = False) -> Dict[str, list]:
        """Rows for ``run.h5 /league`` since the last call: match counts, and every ``league.ratings_every``
        updates (and at the end) the ratings of the members that played since their last row."""
        self.update = update
        w = self.wall()
        for (gi, mid), c in self.pending.items():
            self.rows["league/matches"].append((update, w, gi, mid, *c))
        self.pending = {}
        due = final or self.rows_update is None or update - self.rows_update >= self.lc.ratings_every
        # the members whose games may have changed since their last row (a new member: its first row), in id order
        changed = sorted({m for k in self._rated for m in self._ids_of.get(k, ())}) if self.rated and due else []
        if due:
            self._rated = set()
        for mid in ([live_id(gi) for gi in range(len(self.groups))] + changed
                    + [BASELINE_IDS[b] for b in self.lc.eval_baselines]) if self.rated and due else []:
            k = self.key(mid)
            if k in self.ratings.elo and self.rated_games.get(k) != self.ratings.games[k]:
                s = self.ratings.skill[k]
                self.rows["league/ratings"].append((update, w, mid, self.ratings.elo[k], s.mu, s.sigma, s.ordinal(),
                                                    self.ratings.games[k]))
                self.rated_games[k] = self.ratings.games[k]
        if due:
            self.rows_update = update
        out, self.rows = self.rows, {k: [] for k in TABLES}
        return out

    # ---- checkpoint state --------------------------------------------------------------------------------
    def state_arrays(self) -> Dict[str, np.ndarray]:
        """The league's checkpoint arrays: rows per member, per rated id, per (group, member) met, and the payoff
        table as one row per pair that has played (:meth:`Payoff.checkpoint_arrays`): they grow with the pool and
        the games played, never with the square of the pool."""
        ids = sorted(self.members)
        out = {"league/members": np.array([[m, self.members[m]["group"], self.members[m]["version"],
                                            self.members[m]["update"], self.members[m]["wall_time"]] for m in ids],
                                          np.float64).reshape(len(ids), 5)}
        out.update(self.payoff.checkpoint_arrays("league/payoff_"))  # sparse: one row per pair that has played
        rid, vals = self.ratings.state_arrays()
        out["league/rating_ids"] = np.array(rid, dtype="S")
        out["league/rating_values"] = vals
        out["league/recent"] = np.array([[g, m, v] for (g, m), v in self.recent.items()], np.float64).reshape(-1, 3)
        out["league/last_snapshot"] = np.array([-1 if u is None else u for u in self.last_snapshot], np.int64)
        out["league/counters"] = np.array([self.games, self.self_games, self.wall()], np.float64)
        out["league/eval_queue"] = np.array(self.eval_queue, np.int64).reshape(-1, 2)  # matchups not played yet
        out["league/measure_queue"] = np.array(self.measure_queue, np.int64).reshape(-1, 2)
        out["league/measured"] = np.array(sorted(self.measured), np.int64)
        out["league/exact"] = np.array([[a, b, v] for (a, b), v in self.exact.items()], np.float64).reshape(-1, 3)
        return out

    def load_state_arrays(self, arrays: Dict[str, np.ndarray]) -> None:
        """Inverse of :meth:`state_arrays`; also reads older checkpoints (their dense N x N payoff table)."""
        for m, gi, version, update, wall in arrays["league/members"]:
            m, gi, version = int(m), int(gi), int(version)
            self.members[m] = dict(group=gi, version=version, update=int(update), wall_time=float(wall),
                                   path=snapshot_path(self.run_dir, self.names[gi], version))
        self._lineage, self._of_group, self._ids_of = {}, [[] for _ in self.groups], {}
        for m in self.members:
            self._index_member(m)  # every member gets a ratings row at the first due update, as before the resume
        self.payoff = Payoff.from_checkpoint(arrays, "league/payoff_")  # sparse, or dense from older checkpoints
        self.ratings.load_state_arrays(list(arrays["league/rating_ids"]), arrays["league/rating_values"])
        self.recent = {(int(g), int(m)): float(v) for g, m, v in arrays["league/recent"]}
        self._recent_pool = [{} for _ in self.groups]
        for (g, m), v in self.recent.items():
            if m >= 0 and 0 <= g < len(self.groups):
                self._recent_pool[g][m] = v
        self.last_snapshot = [None if u < 0 else int(u) for u in arrays["league/last_snapshot"]]
        self.games, self.self_games = int(arrays["league/counters"][0]), int(arrays["league/counters"][1])
        self.t0 = self.clock() - float(arrays["league/counters"][2])
        self.eval_queue = [(int(a), int(b)) for a, b in arrays.get("league/eval_queue", np.zeros((0, 2)))]
        self.measure_queue = [(int(m), bool(n)) for m, n in arrays.get("league/measure_queue", np.zeros((0, 2)))]
        self.measured = {int(m) for m in arrays.get("league/measured", np.zeros(0))}
        self.exact = {(int(a), int(b)): float(v) for a, b, v in arrays.get("league/exact", np.zeros((0, 3)))}
