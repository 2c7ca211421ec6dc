"""An aggregation rule of your own for NIGT (docs/extending/aggregation.md): the fastest M gradients of a round, but
at most half of them from any one actor, so one fast actor cannot make a round its own (Rennala's speed, a floor on
how many actors each step hears).

    mpirun -n 5 hpcmarl train configs/nigt_spread.yaml plugins=[examples.capped_rule] algo.aggregation=capped

Listing this module in the config's ``plugins`` imports it on every rank before the config is read; the learners'
rounds, the round counters several learners share, the actors' quotas and the sizing model (``hpcmarl validate
--predict``) all ask the registered object, so nothing else changes.
"""
import numpy as np

from hpcmarl.algos.aggregation import Rule, register_rule


class Capped(Rule):
    name = "capped"
    doc = "the fastest M, at most ceil(M / 2) from any one actor (all of them when there is one)"

    def quota(self, M, n):
        """Each actor stops after ceil(M / 2) gradients a round; with fewer than 2 actors, enough to close it."""
        return max(-(-M // 2), -(-M // max(1, n)))

    def closed(self, counts, M, n):
        return int(np.sum(counts)) >= M


register_rule(Capped())
