"""Rank -> role map: a pure function of the world size and the ``topology`` config.

Ranks ``0 .. L-1`` are learners (rank 0 is the lead learner), the next ``A`` ranks are actors; actor
``i`` (counted from 0 among the actors) is served by learner ``i mod L``.  With one rank and no
actors the run is *serial*: the single learner steps its own environments in-process.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Tuple


class TopologyError(ValueError):
    pass


LEARNER, ACTOR = "learner", "actor"


@dataclass(frozen=True)
class Layout:
    world_size: int
    learners: int
    actors: int

    @property
    def serial(self) -> bool:
        return self.actors == 0

    def role(self, rank: int) -> str:
        if not 0 <= rank < self.world_size:
            raise TopologyError(f"rank {rank} outside world of size {self.world_size}")
        return LEARNER if rank < self.learners else ACTOR

    def actor_index(self, rank: int) -> int:
        """0-based index of an actor rank among the actors."""
        assert self.role(rank) == ACTOR
        return rank - self.learners

    def actor_rank(self, index: int) -> int:
        return self.learners + index

    def learner_of(self, actor_index: int) -> int:
        """Rank of the learner that serves actor ``actor_index``."""
        return actor_index % self.learners

    def actors_of(self, learner_rank: int) -> List[int]:
        """World ranks of the actors served by ``learner_rank``."""
        return [self.actor_rank(i) for i in range(self.actors) if self.learner_of(i) == learner_rank]

    def roles(self) -> List[Tuple[int, str]]:
        return [(r, self.role(r)) for r in range(self.world_size)]

    def describe(self, hosts: Dict[int, str] = None) -> str:
        lines = [f"world size {self.world_size}: {self.learners} learner(s), {self.actors} actor(s)"
                 + (" [serial: the learner steps its own environments]" if self.serial else "")]
        for r in range(self.world_size):
            host = f" on {hosts[r]}" if hosts and r in hosts else ""
            if self.role(r) == LEARNER:
                served = self.actors_of(r) if not self.serial else []
                extra = " (lead)" if r == 0 else ""
                lines.append(f"  rank {r:>4}: learner{extra}{host}, serves actors at ranks {served}")
            else:
                i = self.actor_index(r)
                lines.append(f"  rank {r:>4}: actor {i}{host}, served by learner {self.learner_of(i)}")
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
