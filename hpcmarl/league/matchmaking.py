"""Opponent selection for league training: self-play, fictitious self-play, PFSP, meta-Nash and exploiters (no MPI).

The league rank keeps a :class:`Payoff` table of results between member ids and asks each learner group's
:class:`Matchmaker` for the next opponent; ``pfsp_weights`` is AlphaStar's prioritised fictitious self-play,
``meta_nash`` PSRO's meta-strategy: the Nash equilibrium of the pool's empirical win-rate game.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

STRATEGIES = ("self_play", "uniform", "pfsp", "meta_nash", "exploiter")
WEIGHTINGS = ("squared", "variance", "linear")
OUTCOME_INDEX = {1.0: 0, 0.5: 1, 0.0: 2}  # -> column of (wins, draws, losses)


def as_str(x) -> str:
    """A member id given as ``str`` or read back from HDF5 as ``bytes``."""
    return x.decode() if isinstance(x, bytes) else str(x)


def pfsp_weights(win_rates: np.ndarray, weighting: str = "squared", p: float = 2.0) -> np.ndarray:
    """Prioritised fictitious self-play: P(opponent i) proportional to f(x_i), x_i = the learner's win rate vs i.

    ``"squared"``: f(x) = (1 - x)^p (hardest opponents first), ``"variance"``: f(x) = x (1 - x) (opponents
    of similar strength), ``"linear"``: f(x) = 1 - x. Returns a probability vector; uniform when all f are 0.
    """
    x = np.clip(np.asarray(win_rates, dtype=np.float64), 0.0, 1.0)
    if weighting == "squared":
        w = (1.0 - x) ** p
    elif weighting == "variance":
        w = x * (1.0 - x)
    elif weighting == "linear":
        w = 1.0 - x
    else:
        raise ValueError(f"unknown PFSP weighting {weighting!r}; valid: {', '.join(WEIGHTINGS)}")
    total = w.sum()
    if x.size == 0 or total <= 0:
        return np.full(x.shape, 1.0 / max(x.size, 1))
    return w / total


def zero_sum_nash(payoff: np.ndarray) -> np.ndarray:
    """The row player's maximin (Nash) strategy of the zero-sum matrix game ``payoff[i, j]`` (the row player's
    gain), by linear programming: maximise ``v`` subject to ``payoff.T @ x >= v``, ``x`` a probability vector."""
    from scipy.optimize import linprog

    a = np.asarray(payoff, np.float64)
    n, m = a.shape
    if n == 0:
        return np.zeros(0)
    res = linprog(np.r_[np.zeros(n), -1.0], A_ub=np.c_[-a.T, np.ones(m)], b_ub=np.zeros(m),
                  A_eq=np.r_[np.ones(n), 0.0][None], b_eq=[1.0], bounds=[(0, None)] * n + [(None, None)],
                  method="highs")
    if not res.success:  # pragma: no cover - a bounded feasible LP; kept as a guard
        raise RuntimeError(f"meta-Nash LP failed: {res.message}")
    x = np.clip(res.x[:n], 0.0, None)
    return x / x.sum()


def meta_nash(win_rates: np.ndarray) -> np.ndarray:
    """Nash mixture of the symmetric meta-game whose ``win_rates[i, j]`` is member ``i``'s win rate against ``j``:
    the zero-sum game with payoff ``W - W.T``."""
    w = np.asarray(win_rates, np.float64)
    return zero_sum_nash(w - w.T)


class Matchmaker:
    """Chooses one learner group's next opponent.

    ``"self_play"``: the group's current policy (the caller passes its own id as ``main_id``); ``"uniform"``:
    fictitious self-play, uniform over the frozen pool; ``"pfsp"``: :func:`pfsp_weights` of the win rates
    (options ``weighting``, ``p``); ``"meta_nash"``: :func:`meta_nash` of the pool's win-rate matrix (PSRO);
    ``"exploiter"``: always the current main policy ``main_id``.
    """

    def __init__(self, strategy: str, rng: np.random.Generator, **options):
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown matchmaking strategy {strategy!r}; valid: {', '.join(STRATEGIES)}")
        allowed = {"weighting", "p"} if strategy == "pfsp" else set()
        if set(options) - allowed:
            raise ValueError(f"strategy {strategy!r} takes options {sorted(allowed)}, got {sorted(options)}")
        if strategy == "pfsp":
            pfsp_weights(np.zeros(1), **options)  # validate the weighting now, not at the first match
        self.strategy, self.rng, self.options = strategy, rng, options

    def probabilities(self, pool: Sequence[str], win_rate: Callable[[str], float],
                      matrix: Optional[Callable[[Sequence[str]], np.ndarray]] = None) -> np.ndarray:
        """The distribution ``choose`` samples the pool from (``"uniform"``, ``"pfsp"`` and ``"meta_nash"``).
        ``matrix(pool)``: win rates between pool members (``"meta_nash"``)."""
        if self.strategy == "meta_nash" and len(pool):
            if matrix is None:
                raise ValueError("the meta_nash strategy needs the pool's win-rate matrix")
            return meta_nash(matrix(pool))
        if self.strategy == "pfsp":
            return pfsp_weights(np.array([win_rate(m) for m in pool], dtype=np.float64), **self.options)
        return np.full(len(pool), 1.0 / max(len(pool), 1))

    def choose(self, pool: Sequence[str], main_id: str, win_rate: Callable[[str], float],
               matrix: Optional[Callable[[Sequence[str]], np.ndarray]] = None) -> str:
        """Next opponent id. ``win_rate(m)``: the learner's win rate against pool member ``m``; ``matrix`` as in
        :meth:`probabilities`. An empty pool falls back to ``main_id``."""
        if self.strategy in ("self_play", "exploiter") or len(pool) == 0:
            return main_id
        return pool[int(self.rng.choice(len(pool), p=self.probabilities(pool, win_rate, matrix)))]


class Payoff:
    """Win/draw/loss counts and summed returns between member ids (returns as in a two-player zero-sum game: what
    ``a`` wins, ``b`` loses).

    Kept sparse and updated in place, one game at a time: an id gets an index when it first plays, and each pair of
    ids that has played gets one row ``(i, j)`` with ``i <= j``: ``[wins, draws, losses]`` and the summed return,
    both from ``i``'s side (``j``'s side is their mirror). Memory and the checkpointed form (:meth:`sparse_arrays`)
    grow with the pairs that have played, not with the square of the number of ids.
    """

    def __init__(self):
        self._ids: List[str] = []  # by index, in the order the ids first played
        self._index: Dict[str, int] = {}
        self._rows: Dict[Tuple[int, int], int] = {}  # (i, j), i <= j -> row of the arrays below
        self._ij = np.zeros((0, 2), np.int64)  # arrays with spare capacity: the first len(self._rows) rows are used
        self._wdl = np.zeros((0, 3), np.int64)
        self._ret = np.zeros(0, np.float64)

    # ---- rows ------------------------------------------------------------------------------------------
    def _index_of(self, a: str) -> int:
        i = self._index.get(a)
        if i is None:
            i = self._index[a] = len(self._ids)
            self._ids.append(a)
        return i

    def _row(self, a: str, b: str, create: bool = False) -> Tuple[int, bool]:
        """``(row, flipped)`` of the pair ``a``, ``b`` (``flipped``: the row holds ``b``'s side); row -1 when the
        pair has not played and ``create`` is False."""
        if create:
            i, j = self._index_of(a), self._index_of(b)
        else:
            i, j = self._index.get(a, -1), self._index.get(b, -1)
            if i < 0 or j < 0:
                return -1, False
        flip = i > j
        key = (j, i) if flip else (i, j)
        r = self._rows.get(key, -1)
        if r < 0 and create:
            r = len(self._rows)
            if r == len(self._ret):  # full: double the capacity (amortised O(1) per new pair)
                cap = max(16, 2 * r)
                self._ij = np.concatenate([self._ij, np.zeros((cap - r, 2), np.int64)])
                self._wdl = np.concatenate([self._wdl, np.zeros((cap - r, 3), np.int64)])
                self._ret = np.concatenate([self._ret, np.zeros(cap - r, np.float64)])
            self._ij[r] = key
            self._rows[key] = r
        return r, flip

    def _set(self, ids: Sequence[str], ij: np.ndarray, wdl: np.ndarray, ret: np.ndarray) -> None:
        """Replaces the table: ``ids`` by index, rows ``ij`` (``i <= j``, no repeats) with their counts and returns."""
        self._ids = [as_str(m) for m in ids]
        self._index = {m: i for i, m in enumerate(self._ids)}
        if len(self._index) != len(self._ids):
            raise ValueError("payoff ids repeat")
        ij = np.asarray(ij, np.int64).reshape(-1, 2)
        if len(ij) and (np.any(ij[:, 0] > ij[:, 1]) or ij.min() < 0 or ij.max() >= len(self._ids)):
            raise ValueError("payoff rows must be (i, j) with 0 <= i <= j < len(ids)")
        self._rows = {(int(i), int(j)): r for r, (i, j) in enumerate(ij.tolist())}
        if len(self._rows) != len(ij):
            raise ValueError("payoff rows repeat a pair")
        self._ij = ij.copy()
        self._wdl = np.asarray(wdl, np.int64).reshape(-1, 3).copy()
        self._ret = np.asarray(ret, np.float64).reshape(-1).copy() + 0.0  # no negative zeros
        if not len(self._ij) == len(self._wdl) == len(self._ret):
            raise ValueError("payoff rows, counts and returns differ in length")

    # ---- games -----------------------------------------------------------------------------------------
    def record(self, a: str, b: str, outcome: float, ret: float = 0.0) -> None:
        """One game; ``outcome`` from ``a``'s view: 1 win, 0.5 draw, 0 loss (``a == b`` counts a win and a loss);
        ``ret``: ``a``'s return."""
        if float(outcome) not in OUTCOME_INDEX:
            raise ValueError(f"outcome must be 1, 0.5 or 0, got {outcome!r}")
        k = OUTCOME_INDEX[float(outcome)]
        r, flip = self._row(a, b, create=True)
        self._wdl[r, 2 - k if flip else k] += 1
        if a == b:
            self._wdl[r, 2 - k] += 1
        self.add_return(a, b, ret)

    def add_return(self, a: str, b: str, total: float) -> None:
        """``total``: ``a``'s summed return over games against ``b`` counted by :meth:`record`."""
        if a != b:
            r, flip = self._row(a, b, create=True)
            self._ret[r] = self._ret[r] - float(total) if flip else self._ret[r] + float(total)

    def counts(self, a: str, b: str) -> np.ndarray:
        """``[wins, draws, losses]`` of ``a`` against ``b``."""
        r, flip = self._row(a, b)
        if r < 0:
            return np.zeros(3, np.int64)
        return self._wdl[r, ::-1].copy() if flip else self._wdl[r].copy()

    def games(self, a: str, b: str) -> int:
        return int(self.counts(a, b).sum())

    def pairs(self) -> int:
        """Pairs of ids (in either order) with a row: those that have played."""
        return len(self._rows)

    def win_rate(self, a: str, b: str, prior: float = 0.5, prior_games: float = 1.0) -> float:
        """(wins + draws / 2 + prior * prior_games) / (games + prior_games): ``prior`` until games are played."""
        w, d, l = self.counts(a, b)
        return float((w + 0.5 * d + prior * prior_games) / (w + d + l + prior_games))

    def mean_return(self, a: str, b: str) -> float:
        """``a``'s mean return per game against ``b`` (0 before any game)."""
        r, flip = self._row(a, b)
        n = int(self._wdl[r].sum()) if r >= 0 else 0
        return float(((0.0 - self._ret[r]) if flip else self._ret[r]) / n) if n else 0.0

    def matrix(self, ids: Sequence[str], kind: str = "win_rate", prior: float = 0.5,
               prior_games: float = 1.0) -> np.ndarray:
        """``M[i, j]`` = win rate (``kind="win_rate"``, :meth:`win_rate` with ``prior``, ``prior_games``) or mean
        return (``"return"``) of ``ids[i]`` against ``ids[j]``; the same values as cell by cell, built from the
        rows of the pairs that have played (O(len(ids)^2 + pairs) in numpy)."""
        n = len(ids)
        index = np.fromiter((self._index.get(a, -1) for a in ids), np.int64, n)
        uniq, inv = np.unique(index, return_inverse=True)  # the matrix of the distinct ids, expanded at the end
        loc = np.full(len(self._ids), -1, np.int64)
        loc[uniq[uniq >= 0]] = np.nonzero(uniq >= 0)[0]
        used = len(self._rows)
        li, lj = loc[self._ij[:used, 0]], loc[self._ij[:used, 1]]
        keep = (li >= 0) & (lj >= 0)
        li, lj, wdl = li[keep], lj[keep], self._wdl[:used][keep]
        if kind == "win_rate":  # the operations of win_rate, in its order (bit for bit the same values)
            def cell(c):
                return (c[:, 0] + 0.5 * c[:, 1] + prior * prior_games) / (c[:, 0] + c[:, 1] + c[:, 2] + prior_games)

            default = (0 + 0.5 * 0 + prior * prior_games) / (0 + 0 + 0 + prior_games)
            fwd, back = cell(wdl), cell(wdl[:, ::-1])
        else:
            games, ret = wdl.sum(1), self._ret[:used][keep]
            default = 0.0
            fwd = np.where(games > 0, ret / np.maximum(games, 1), 0.0)
            back = np.where(games > 0, (0.0 - ret) / np.maximum(games, 1), 0.0)
        m = np.full((len(uniq), len(uniq)), default, np.float64)
        m[lj, li] = back
        m[li, lj] = fwd  # a pair of equal ids: its own row's side
        return m[np.ix_(inv.reshape(-1), inv.reshape(-1))].reshape(n, n)

    # ---- checkpoints -----------------------------------------------------------------------------------
    def sparse_arrays(self) -> Tuple[List[str], np.ndarray, np.ndarray]:
        """``(ids, pairs, returns)``: ``pairs[r]`` = ``[i, j, wins, draws, losses]`` of ``ids[i]`` against ``ids[j]``
        (``i <= j``) and ``returns[r]`` ``ids[i]``'s summed return, one row per pair that has played (int64 and
        float64, HDF5-friendly): what the league checkpoints."""
        used = len(self._rows)
        return list(self._ids), np.concatenate([self._ij[:used], self._wdl[:used]], axis=1), self._ret[:used].copy()

    def load_sparse_arrays(self, ids: Sequence[str], pairs: np.ndarray, returns: Optional[np.ndarray] = None) -> None:
        """Inverse of :meth:`sparse_arrays`; ``ids`` may be ``bytes`` as h5py returns strings."""
        pairs = np.asarray(pairs, np.int64).reshape(-1, 5)
        self._set(ids, pairs[:, :2], pairs[:, 2:], np.zeros(len(pairs)) if returns is None else returns)

    def state_arrays(self) -> Tuple[List[str], np.ndarray, np.ndarray]:
        """The dense form (small tables; what league checkpoints held before :meth:`sparse_arrays`): ``(ids,
        counts, returns)``, ``ids`` sorted, ``counts[i, j]`` = ``[w, d, l]``, ``returns[i, j]`` the summed return of
        ``ids[i]`` vs ``ids[j]``."""
        ids = sorted(self._ids)
        n, used = len(ids), len(self._rows)
        pos = np.empty(len(self._ids), np.int64)
        pos[[self._index[m] for m in ids]] = np.arange(n)
        i, j = pos[self._ij[:used, 0]], pos[self._ij[:used, 1]]
        counts, returns = np.zeros((n, n, 3), np.int64), np.zeros((n, n), np.float64)
        counts[j, i], returns[j, i] = self._wdl[:used, ::-1], 0.0 - self._ret[:used]
        counts[i, j], returns[i, j] = self._wdl[:used], self._ret[:used]
        return ids, counts, returns

    def load_state_arrays(self, ids: Sequence[str], counts: np.ndarray, returns: Optional[np.ndarray] = None) -> None:
        """Inverse of :meth:`state_arrays` (the dense form, also of older league checkpoints); ``ids`` may be
        ``bytes`` as h5py returns strings."""
        n = len(ids)
        counts = np.asarray(counts, np.int64).reshape(n, n, 3)
        returns = np.zeros((n, n)) if returns is None else np.asarray(returns, np.float64).reshape(n, n)
        played = counts.any(axis=2) | (returns != 0)
        i, j = np.nonzero(np.triu(played | played.T))
        self._set(ids, np.stack([i, j], axis=1), counts[i, j], returns[i, j])

    def checkpoint_arrays(self, prefix: str = "league/payoff_") -> Dict[str, np.ndarray]:
        """:meth:`sparse_arrays` as checkpoint arrays: ``<prefix>ids`` (bytes), ``<prefix>pairs``,
        ``<prefix>pair_returns``."""
        ids, pairs, returns = self.sparse_arrays()
        return {f"{prefix}ids": np.array(ids, dtype="S"), f"{prefix}pairs": pairs, f"{prefix}pair_returns": returns}

    @classmethod
    def from_checkpoint(cls, arrays: Dict[str, np.ndarray], prefix: str = "league/payoff_") -> "Payoff":
        """The table in checkpoint ``arrays``: the sparse form of :meth:`checkpoint_arrays`, or the dense one of
        older checkpoints (``<prefix>counts``, ``<prefix>returns``); empty when neither is there."""
        pay = cls()
        ids = list(arrays.get(f"{prefix}ids", []))
        if f"{prefix}pairs" in arrays:
            pay.load_sparse_arrays(ids, arrays[f"{prefix}pairs"], arrays.get(f"{prefix}pair_returns"))
        elif f"{prefix}counts" in arrays:
            pay.load_state_arrays(ids, arrays[f"{prefix}counts"], arrays.get(f"{prefix}returns"))
        return pay
