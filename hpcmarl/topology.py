"""Rank -> role map: a pure function of the world size and the ``topology`` config.

Ranks ``0 .. L-1`` are learners (rank 0 is the lead learner), the next ``A`` ranks are actors; actor
``i`` (counted from 0 among the actors) is served by learner ``i mod L``.  With one rank and no
actors the run is *serial*: the single learner steps its own environments in-process.

League mode adds learner groups and one league rank (the last rank): the learners of group 0 come first,
then those of group 1, ...; the actors follow in the same group order; actor ``j`` of a group is served by
the group's learner ``j mod L_g``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Tuple


class TopologyError(ValueError):
    pass


LEARNER, ACTOR, LEAGUE = "learner", "actor", "league"


@dataclass(frozen=True)
class Layout:
    world_size: int
    learners: int
    actors: int
    groups: Tuple[Tuple[str, int, int], ...] = ()  # league mode: (name, learners, actors) per learner group

    @property
    def serial(self) -> bool:
        return self.actors == 0

    @property
    def league(self) -> bool:
        return bool(self.groups)

    @property
    def league_rank(self) -> int:
        assert self.league
        return self.world_size - 1

    def role(self, rank: int) -> str:
        if not 0 <= rank < self.world_size:
            raise TopologyError(f"rank {rank} outside world of size {self.world_size}")
        if self.league and rank == self.world_size - 1:
            return LEAGUE
        return LEARNER if rank < self.learners else ACTOR

    def _locate(self, i: int, col: int) -> Tuple[int, int]:
        """League mode: (group, index inside it) of learner (``col`` 1) or actor (``col`` 2) number ``i``."""
        for gi, g in enumerate(self.groups):
            if i < g[col]:
                return gi, i
            i -= g[col]
        raise TopologyError(f"{'learner' if col == 1 else 'actor'} {i} outside the league groups {self.groups}")

    def group_of(self, rank: int) -> int:
        """League mode: index of the learner group a learner or actor rank belongs to."""
        role = self.role(rank)
        assert role != LEAGUE and self.league
        return self._locate(rank, 1)[0] if role == LEARNER else self._locate(self.actor_index(rank), 2)[0]

    def group_learners(self, gi: int) -> List[int]:
        first = sum(g[1] for g in self.groups[:gi])
        return list(range(first, first + self.groups[gi][1]))

    def actor_index(self, rank: int) -> int:
        """0-based index of an actor rank among the actors."""
        assert self.role(rank) == ACTOR
        return rank - self.learners

    def actor_rank(self, index: int) -> int:
        return self.learners + index

    def learner_of(self, actor_index: int) -> int:
        """Rank of the learner that serves actor ``actor_index``."""
        if not self.league:
            return actor_index % self.learners
        gi, j = self._locate(actor_index, 2)
        return self.group_learners(gi)[j % self.groups[gi][1]]

    def actors_of(self, learner_rank: int) -> List[int]:
        """World ranks of the actors served by ``learner_rank``."""
        return [self.actor_rank(i) for i in range(self.actors) if self.learner_of(i) == learner_rank]

    def roles(self) -> List[Tuple[int, str]]:
        return [(r, self.role(r)) for r in range(self.world_size)]

    def describe(self, hosts: Dict[int, str] = None) -> str:
        lines = [f"world size {self.world_size}: {self.learners} learner(s), {self.actors} actor(s)"
                 + (" [serial: the learner steps its own environments]" if self.serial else "")
                 + (" + 1 league rank; learner groups: "
                    + ", ".join(f"{n} ({nl} learner(s), {na} actor(s))" for n, nl, na in self.groups)
                    if self.league else "")]
        for r in range(self.world_size):
            host = f" on {hosts[r]}" if hosts and r in hosts else ""
            grp = f" [group {self.groups[self.group_of(r)][0]}]" if self.league and self.role(r) != LEAGUE else ""
            if self.role(r) == LEAGUE:
                lines.append(f"  rank {r:>4}: league (pool, matchmaking, ratings, evaluation){host}")
            elif self.role(r) == LEARNER:
                served = self.actors_of(r) if not self.serial else []
                extra = " (lead)" if r == 0 else ""
                lines.append(f"  rank {r:>4}: learner{extra}{grp}{host}, serves actors at ranks {served}")
            else:
                i = self.actor_index(r)
                lines.append(f"  rank {r:>4}: actor {i}{grp}{host}, served by learner {self.learner_of(i)}")
        return "\n".join(lines)


def make_layout(world_size: int, learners: int, actors="auto") -> Layout:
    """Validate the topology against ``world_size`` and return the layout; errors say what is wrong."""
    if world_size < 1:
        raise TopologyError(f"world size must be >= 1, got {world_size}")
    if learners < 1:
        raise TopologyError(f"topology.learners must be >= 1, got {learners}")
    if world_size == 1 and learners == 1 and actors in ("auto", 0):
        return Layout(1, 1, 0)  # serial mode
    if learners >= world_size:
        raise TopologyError(
            f"topology.learners={learners} leaves no actor rank in a world of {world_size} rank(s); "
            f"use at most {world_size - 1} learner(s), or launch more ranks (or 1 rank with 1 learner for serial mode)")
    n_actors = world_size - learners if actors == "auto" else int(actors)
    if n_actors + learners != world_size:
        raise TopologyError(
            f"topology.learners={learners} + topology.actors={n_actors} = {learners + n_actors} ranks, "
            f"but the job has {world_size}; set topology.actors=auto or launch {learners + n_actors} ranks")
    if n_actors < learners:
        raise TopologyError(
            f"{n_actors} actor(s) for {learners} learners: every learner needs at least one actor "
            f"(actor i is served by learner i mod L)")
    return Layout(world_size, learners, n_actors)


def make_league_layout(world_size: int, groups: List[Tuple[str, int, int]]) -> Layout:
    """League mode: ``groups`` = ``(name, learners, actors)`` per learner group (``actors`` 0 = an even share
    of the ranks left over); the last rank is the league rank."""
    if world_size < 3:
        raise TopologyError(f"league mode needs at least 3 ranks (a learner, an actor and the league rank); "
                            f"the job has {world_size}")
    n_learn = sum(g[1] for g in groups)
    fixed = sum(g[2] for g in groups)
    auto = [i for i, g in enumerate(groups) if g[2] == 0]
    left = world_size - 1 - n_learn - fixed
    if left < 0 or (left > 0 and not auto) or (auto and left < len(auto)):
        need = n_learn + fixed + 1 + len(auto)
        raise TopologyError(
            f"league groups ask for {n_learn} learner(s) + {fixed} actor(s) + 1 league rank"
            + (f" + at least {len(auto)} actor(s) for the group(s) with actors=0 (auto)" if auto else "")
            + f", but the job has {world_size} ranks; launch {need if auto else n_learn + fixed + 1}"
            + (" or more" if auto else "") + " ranks or change league.groups")
    out = []
    for i, (name, nl, na) in enumerate(groups):
        if i in auto:
            k = auto.index(i)
            na = left // len(auto) + (1 if k < left % len(auto) else 0)
        if na < nl:
            raise TopologyError(f"league group {name!r}: {na} actor(s) for {nl} learner(s); every learner needs "
                                f"at least one actor")
        out.append((name, nl, na))
    return Layout(world_size, n_learn, sum(g[2] for g in out), tuple(out))
