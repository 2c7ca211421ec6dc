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
    """Win/draw/loss counts and summed returns between member ids, stored in both directions (returns as in a
    two-player zero-sum game: what ``a`` wins, ``b`` loses)."""

    def __init__(self):
        self._wdl: Dict[Tuple[str, str], np.ndarray] = {}
        self._ret: Dict[Tuple[str, str], float] = {}

    def record(self, a: str, b: str, outcome: float, ret: float = 0.0) -> None:
        """One game; ``outcome`` from ``a``'s view: 1 win, 0.5 draw, 0 loss (``a == b`` counts a win and a loss);
        ``ret``: ``a``'s return."""
        if float(outcome) not in OUTCOME_INDEX:
            raise ValueError(f"outcome must be 1, 0.5 or 0, got {outcome!r}")
        i = OUTCOME_INDEX[float(outcome)]
        self._wdl.setdefault((a, b), np.zeros(3, np.int64))[i] += 1
        self._wdl.setdefault((b, a), np.zeros(3, np.int64))[2 - i] += 1
        self.add_return(a, b, ret)

    def add_return(self, a: str, b: str, total: float) -> None:
        """``total``: ``a``'s summed return over games against ``b`` counted by :meth:`record`."""
        if a != b:
            self._ret[(a, b)] = self._ret.get((a, b), 0.0) + float(total)
            self._ret[(b, a)] = self._ret.get((b, a), 0.0) - float(total)

    def counts(self, a: str, b: str) -> np.ndarray:
        """``[wins, draws, losses]`` of ``a`` against ``b``."""
        return self._wdl.get((a, b), np.zeros(3, np.int64)).copy()

    def games(self, a: str, b: str) -> int:
        return int(self.counts(a, b).sum())

    def win_rate(self, a: str, b: str, prior: float = 0.5, prior_games: float = 1.0) -> float:
        """(wins + draws / 2 + prior * prior_games) / (games + prior_games): ``prior`` until games are played."""
        w, d, l = self.counts(a, b)
        return float((w + 0.5 * d + prior * prior_games) / (w + d + l + prior_games))

    def mean_return(self, a: str, b: str) -> float:
        """``a``'s mean return per game against ``b`` (0 before any game)."""
        n = self.games(a, b)
        return self._ret.get((a, b), 0.0) / n if n else 0.0

    def matrix(self, ids: Sequence[str], kind: str = "win_rate", **prior) -> np.ndarray:
        """``M[i, j]`` = win rate (``kind="win_rate"``) or mean return (``"return"``) of ``ids[i]`` against ``ids[j]``."""
        cell = (lambda a, b: self.win_rate(a, b, **prior)) if kind == "win_rate" else self.mean_return
        return np.array([[cell(a, b) for b in ids] for a in ids], dtype=np.float64).reshape(len(ids), len(ids))

    def state_arrays(self) -> Tuple[List[str], np.ndarray, np.ndarray]:
        """``(ids, counts, returns)``: ``counts[i, j]`` = ``[w, d, l]``, ``returns[i, j]`` the summed return of
        ``ids[i]`` vs ``ids[j]`` (HDF5-friendly)."""
        ids = sorted({a for a, _ in self._wdl})
        n = len(ids)
        counts = np.array([[self.counts(a, b) for b in ids] for a in ids], np.int64).reshape(n, n, 3)
        returns = np.array([[self._ret.get((a, b), 0.0) for b in ids] for a in ids], np.float64).reshape(n, n)
        return ids, counts, returns

    def load_state_arrays(self, ids: Sequence[str], counts: np.ndarray, returns: Optional[np.ndarray] = None) -> None:
        """Inverse of :meth:`state_arrays`; ``ids`` may be ``bytes`` as h5py returns strings."""
        ids = [as_str(m) for m in ids]
        self._wdl = {(a, b): np.asarray(counts[i, j], np.int64).copy()
                     for i, a in enumerate(ids) for j, b in enumerate(ids) if np.any(counts[i, j])}
        self._ret = {} if returns is None else {(a, b): float(returns[i, j]) for i, a in enumerate(ids)
                                                for j, b in enumerate(ids) if returns[i, j]}
