"""NIGT's aggregation rules as registered objects: when a round closes and how its gradients combine.

Pure numpy, no MPI. The learner's round (:class:`hpcmarl.algos.nigt.Round`), the round counters several learners
share (:mod:`hpcmarl.roles.counter_gate`), the event-queue simulator and the sizing model
(:mod:`hpcmarl.sizing.gradients`) all ask the rule object; no module tests a rule's name
(tests/unit/test_layout.py checks it). ``algo.aggregation`` names one of :data:`RULES`; a plug-in adds its own with
:func:`register_rule` (docs/extending/aggregation.md)::

    rennala    the first M gradients of the round from any workers, pooled: g = sum / M
    malenia    per worker i: S_i, M_i; closes when every M_i >= 1 and (1/n sum 1/M_i)^-1 >= M / n;
               g = (1/n) sum_i S_i / M_i  (each worker's mean weighted 1/n)
    allreduce  synchronous: every worker contributes ceil(M / n) gradients; g = sum / count
"""
from __future__ import annotations

from typing import Dict, Union

import numpy as np


class Rule:
    """An aggregation rule. ``counts`` are the gradients accepted this round per actor (the actors whose counts the
    judge sees: all of them, or, for a rule without ``shared_counters``, one learner's own); ``M`` the round's batch;
    ``n`` the run's actor count.

    Capabilities: ``per_actor``: :meth:`combine` receives the sum of each actor's mean (else the pooled sum);
    ``shared_counters``: with several learners the round is judged on one set of counters that learner 0 keeps (every
    learner's offers go there); without, each learner judges its own actors' counts (a quota rule) and no counters
    are shared."""

    name = ""
    per_actor = False
    shared_counters = True
    doc = ""

    def quota(self, M: int, n: int) -> int:
        """Gradients each actor computes per round (actors stop there and wait for the next query point); 0: no
        limit."""
        return 0

    def room(self, count: int, M: int, n: int) -> bool:
        """An actor that has ``count`` gradients accepted this round may give one more (below its quota)."""
        q = self.quota(M, n)
        return not q or count < q

    def closed(self, counts: np.ndarray, M: int, n: int) -> bool:
        """The round has all it needs."""
        raise NotImplementedError

    def accepts(self, counts: np.ndarray, count: int, M: int, n: int) -> bool:
        """One more gradient from an actor with ``count`` accepted this round is taken: the round (judged on
        ``counts``) is still open and the actor below its quota."""
        return not self.closed(counts, M, n) and self.room(count, M, n)

    def combine(self, total: np.ndarray, counts: np.ndarray, n: int) -> np.ndarray:
        """The round's gradient estimate from the learners' reduced sums ``total`` and per-actor counts."""
        return total / max(1, int(np.sum(counts)))


def malenia_closed(counts: np.ndarray, M: int) -> bool:
    """Every worker delivered at least one gradient and the harmonic mean of the counts reaches M / n."""
    counts = np.asarray(counts, np.float64)
    if counts.size == 0 or (counts < 1).any():
        return False
    return counts.size / np.sum(1.0 / counts) >= M / counts.size - 1e-9


class Rennala(Rule):
    name = "rennala"
    doc = "the first M gradients of the round from any actors, pooled (the fastest M)"

    def closed(self, counts, M, n):
        return int(np.sum(counts)) >= M


class Malenia(Rule):
    name = "malenia"
    per_actor = True
    doc = "each actor's mean weighted 1/n; closes when the harmonic mean of the counts reaches M / n"

    def closed(self, counts, M, n):
        return malenia_closed(counts, M)

    def combine(self, total, counts, n):
        return total / n


class Allreduce(Rule):
    name = "allreduce"
    shared_counters = False
    doc = "synchronous: ceil(M / n) gradients from every actor, pooled"

    def quota(self, M, n):
        return -(-M // n)

    def closed(self, counts, M, n):
        return bool((np.asarray(counts) >= self.quota(M, n)).all())


RULES: Dict[str, Rule] = {}


def register_rule(rule: Rule, replace: bool = False) -> Rule:
    """Add ``rule`` (an instance of a :class:`Rule` subclass) under ``rule.name``; ``replace``: allow another
    definition under a taken name.

    Raises:
        ValueError: the name is empty, not an identifier, or taken by another rule (without ``replace``).
    """
    if not isinstance(rule, Rule) or not rule.name.isidentifier():
        raise ValueError(f"an aggregation rule is a Rule instance with an identifier as its name, not {rule!r}")
    if rule.name in RULES and type(RULES[rule.name]) is not type(rule) and not replace:
        raise ValueError(f"aggregation rule {rule.name!r} is already registered (pass replace=True to redefine it)")
    RULES[rule.name] = rule
    return rule


def get(rule: Union[str, Rule]) -> Rule:
    """The rule object of ``rule`` (a registered name, or a rule already).

    Raises:
        ValueError: no rule of that name is registered.
    """
    if isinstance(rule, Rule):
        return rule
    try:
        return RULES[rule]
    except KeyError:
        raise ValueError(f"unknown aggregation rule {rule!r} (known: {', '.join(RULES)})") from None


for _rule in (Rennala(), Malenia(), Allreduce()):
    register_rule(_rule)
