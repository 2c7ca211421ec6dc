"""Elo and OpenSkill ratings of league members (no MPI).

The league rank records every reported game here; the OpenSkill side is the maintained ``openskill`` library's
default model (Plackett-Luce), whose ``ordinal`` (mu - 3 sigma) is the conservative skill estimate.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from openskill.models import PlackettLuce, PlackettLuceRating

from hpcmarl.league.matchmaking import as_str

_RANKS = {1.0: [0, 1], 0.5: [0, 0], 0.0: [1, 0]}  # score of a -> OpenSkill ranks (lower is better, equal = tie)


def elo_expected(ra: float, rb: float) -> float:
    """Expected score of ``a``: 1 / (1 + 10^((rb - ra) / 400))."""
    return 1.0 / (1.0 + 10.0 ** ((rb - ra) / 400.0))


def elo_update(ra: float, rb: float, score_a: float, k: float = 32.0) -> Tuple[float, float]:
    """One game; ``score_a`` in {1, 0.5, 0}. Returns the new ``(ra, rb)`` (zero-sum)."""
    delta = k * (score_a - elo_expected(ra, rb))
    return ra + delta, rb - delta


class Ratings:
    """Elo (starting at ``elo0``) and OpenSkill ratings per member id."""

    def __init__(self, elo0: float = 1000.0, k: float = 32.0, model: Optional[PlackettLuce] = None):
        self.elo0, self.k, self.model = elo0, k, model or PlackettLuce()
        self.elo: Dict[str, float] = {}
        self.skill: Dict[str, PlackettLuceRating] = {}
        self.games: Dict[str, int] = {}

    def add(self, mid: str) -> None:
        """Registers ``mid`` with the initial ratings (no-op when known)."""
        if mid not in self.elo:
            self.elo[mid], self.skill[mid], self.games[mid] = self.elo0, self.model.rating(name=mid), 0

    def record(self, a: str, b: str, score_a: float) -> None:
        """One game between two different members; ``score_a``: 1 win, 0.5 draw (an OpenSkill tie), 0 loss."""
        if float(score_a) not in _RANKS:
            raise ValueError(f"score_a must be 1, 0.5 or 0, got {score_a!r}")
        if a == b:
            raise ValueError(f"cannot rate {a!r} against itself")
        self.add(a)
        self.add(b)
        self.elo[a], self.elo[b] = elo_update(self.elo[a], self.elo[b], float(score_a), self.k)
        [[sa], [sb]] = self.model.rate([[self.skill[a]], [self.skill[b]]], ranks=_RANKS[float(score_a)])
        self.skill[a], self.skill[b] = sa, sb
        self.games[a] += 1
        self.games[b] += 1

    def table(self) -> List[dict]:
        """One dict per member (id, elo, mu, sigma, ordinal, games), best ordinal first."""
        rows = [dict(id=m, elo=self.elo[m], mu=s.mu, sigma=s.sigma, ordinal=s.ordinal(), games=self.games[m])
                for m, s in self.skill.items()]
        return sorted(rows, key=lambda r: -r["ordinal"])

    def state_arrays(self) -> Tuple[List[str], np.ndarray]:
        """``(ids, values)`` with ``values[i]`` = ``[elo, mu, sigma, games]`` (plain arrays, no pickle)."""
        ids = list(self.elo)
        vals = [[self.elo[m], self.skill[m].mu, self.skill[m].sigma, self.games[m]] for m in ids]
        return ids, np.array(vals, np.float64).reshape(len(ids), 4)

    def load_state_arrays(self, ids: Sequence[str], values: np.ndarray) -> None:
        """Inverse of :meth:`state_arrays`; ``ids`` may be ``bytes`` as h5py returns strings."""
        self.elo, self.skill, self.games = {}, {}, {}
        for m, (elo, mu, sigma, games) in zip(map(as_str, ids), np.asarray(values, np.float64)):
            self.elo[m], self.games[m] = float(elo), int(games)
            self.skill[m] = self.model.rating(mu=float(mu), sigma=float(sigma), name=m)
