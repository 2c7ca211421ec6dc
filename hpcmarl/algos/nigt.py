"""NIGT policy gradient with Rennala / Malenia / synchronous aggregation (docs/algorithms/nigt.md).

Pure compute, no MPI: the trajectory gradient estimator, the NIGT state, a round's bookkeeping under an
aggregation rule (the rules: :mod:`hpcmarl.algos.aggregation`) and an event-queue simulator of workers with given
compute times (used by the tests and as a cheap reference). The MPI shells live in :mod:`hpcmarl.roles.gradients`.

Notation (ascent):
    round 0:   d_0 = Aggregate(theta_0, M_init);  theta_1 = theta_0 + alpha d_0 / ||d_0||
    round t:   x_t = theta_t + ((1 - eta) / eta) (theta_t - theta_{t-1})     (query point; all
               gradients of the round are computed here)
               g_t = Aggregate(x_t, M);  d_t = (1 - eta) d_{t-1} + eta g_t
               theta_{t+1} = theta_t + alpha d_t / ||d_t||                     (global L2 norm)
Aggregate:
    rennala    the first M gradients of the round from any workers, pooled: g = sum / M
    malenia    per worker i: S_i, M_i; closes when every M_i >= 1 and (1/n sum 1/M_i)^-1 >= M / n;
               g = (1/n) sum_i S_i / M_i  (each worker's mean weighted 1/n)
    allreduce  synchronous: every worker contributes ceil(M / n) gradients; g = sum / count
Gradients computed for an earlier round are dropped, never applied.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Union

import numpy as np
import torch

from hpcmarl.algos import aggregation
from hpcmarl.algos.aggregation import Rule, malenia_closed  # noqa: F401 (malenia_closed: part of this module's API)
from hpcmarl.envs import EnvSpec
from hpcmarl.typedconfig import check

EPS = 1e-12


# --------------------------------------------------------------------------------------------------
# the worker-side estimator g_H(tau, x)
# --------------------------------------------------------------------------------------------------
def discounted_reward_to_go(reward: torch.Tensor, gamma: float) -> torch.Tensor:
    """``G_t = sum_{h >= t} gamma^h r_h`` along axis 0 (discount counted from the episode start)."""
    T = reward.shape[0]
    disc = gamma ** torch.arange(T, dtype=reward.dtype).reshape((T,) + (1,) * (reward.dim() - 1))
    return torch.flip(torch.cumsum(torch.flip(disc * reward, [0]), 0), [0])


@dataclass
class NIGTConfig:
    """Policy-gradient NIGT with Rennala / Malenia / synchronous aggregation (docs/algorithms/nigt.md).

    Actors compute REINFORCE/GPOMDP gradients of whole trajectories at the round's query point and send
    ``(round, gradient)``; learners aggregate and take one normalized momentum step per round."""

    name: str = "nigt"  # the algorithm (see `aggregation` for its variants)
    aggregation: str = "rennala"  # rennala (the fastest M) | malenia (1/n per actor) | allreduce (synchronous)
    lr: float = 0.05  # alpha: every step moves the parameters by exactly this L2 length
    momentum: float = 0.1  # eta: weight of the new gradient in d_t; the query point lies (1-eta)/eta steps ahead
    batch: int = 20  # M: trajectories per round
    init_batch: int = 20  # M_init: trajectories for the initial direction d_0 at theta_0
    horizon: int = 0  # H: steps per trajectory (0 = until the episode ends)
    gamma: float = 0.99  # discount factor of the reward-to-go
    hidden: int = 64  # units per hidden layer of the policy MLP
    layers: int = 2  # hidden layers of the policy MLP
    init_std: float = 0.6  # continuous actions: initial softplus standard deviation (pre-tanh)
    learn_std: bool = True  # continuous actions: false keeps the std at init_std (REINFORCE without a baseline
    # loses signal as the std shrinks: the noise of r * grad log pi grows like 1/std)
    check_every: int = 1  # compare the learners' parameter checksums every this many rounds (0 = at checkpoints only)

    uses_state = False

    def validate(self, cfg) -> None:
        """Checks beyond the types (called by :func:`hpcmarl.config.validate`)."""
        check(self.aggregation in aggregation.RULES, "algo.aggregation",
              f"must be one of {', '.join(aggregation.RULES)}")
        check(self.lr > 0, "algo.lr", "must be > 0")
        check(0 < self.momentum <= 1, "algo.momentum", "must be in (0, 1]")
        check(self.batch >= 1, "algo.batch", "must be >= 1")
        check(self.init_batch >= 1, "algo.init_batch", "must be >= 1")
        check(self.horizon >= 0, "algo.horizon", "must be >= 0 (0 = whole episodes)")
        check(0 < self.gamma <= 1, "algo.gamma", "must be in (0, 1]")
        check(self.hidden >= 1, "algo.hidden", "must be >= 1")
        check(self.layers >= 1, "algo.layers", "must be >= 1")
        check(self.init_std > 0, "algo.init_std", "must be > 0")
        check(self.check_every >= 0, "algo.check_every", "must be >= 0")


def trajectory_objective(policies, spec: EnvSpec, traj: Dict[str, torch.Tensor], gamma: float) -> torch.Tensor:
    """Per-trajectory surrogate ``sum_t sum_agents G_t log pi(a_t | o_t)``, shape ``[E]``.

    ``traj`` holds per group ``obs [T, E, n, d]``, ``action``, ``reward [T, E, n]``, ``valid [T, E, n]``
    (the agent acted at step t of this trajectory) and ``action_mask``. Each agent's reward-to-go uses
    its own rewards; steps where it did not act count zero. Its gradient is GPOMDP's ``g_H``."""
    total = 0.0
    for g in spec.groups:
        n = g.name
        valid = traj[f"{n}/valid"].to(torch.float32)
        G = discounted_reward_to_go(traj[f"{n}/reward"] * valid, gamma)
        mask = traj[f"{n}/action_mask"] if g.discrete else None
        logp = policies[n].dist(traj[f"{n}/obs"], mask).log_prob(traj[f"{n}/action"])
        total = total + (G * logp * valid).sum(dim=(0, 2))
    return total


def trajectory_gradients(policies, spec: EnvSpec, traj: Dict[str, torch.Tensor], gamma: float) -> np.ndarray:
    """One flat gradient ``g_H(tau_e, x)`` per trajectory ``e``: ``[E, d]`` float32 (ascent direction)."""
    params = list(policies.parameters())
    obj = trajectory_objective(policies, spec, traj, gamma)
    out = np.empty((obj.shape[0], sum(p.numel() for p in params)), np.float32)
    for e in range(obj.shape[0]):
        grads = torch.autograd.grad(obj[e], params, retain_graph=e + 1 < obj.shape[0], allow_unused=True)
        out[e] = torch.cat([(gr if gr is not None else torch.zeros_like(p)).reshape(-1)
                            for gr, p in zip(grads, params)]).numpy()
    return out


# --------------------------------------------------------------------------------------------------
# NIGT state
# --------------------------------------------------------------------------------------------------
class NIGT:
    """theta_t, theta_{t-1} and d_{t-1} (float64); identical on every learner after every round."""

    def __init__(self, theta0: np.ndarray, lr: float, momentum: float):
        self.lr, self.eta = float(lr), float(momentum)
        self.theta = np.asarray(theta0, np.float64).copy()
        self.prev = self.theta.copy()
        self.d = np.zeros_like(self.theta)
        self.round = 0

    def query_point(self) -> np.ndarray:
        """Where this round's gradients are computed: theta_0 in round 0, else the extrapolated x_t."""
        if self.round == 0:
            return self.theta.copy()
        return self.theta + ((1.0 - self.eta) / self.eta) * (self.theta - self.prev)

    def step(self, g: np.ndarray) -> float:
        """Momentum + normalized step; returns ||d_t|| (the step length is exactly lr unless d_t = 0)."""
        g = np.asarray(g, np.float64)
        self.d = g.copy() if self.round == 0 else (1.0 - self.eta) * self.d + self.eta * g
        norm = float(np.linalg.norm(self.d))
        self.prev = self.theta
        self.theta = self.theta + self.lr * self.d / max(norm, EPS) if norm > 0 else self.theta.copy()
        self.round += 1
        return norm

    def state_arrays(self) -> Dict[str, np.ndarray]:
        return {"nigt/theta": self.theta, "nigt/theta_prev": self.prev, "nigt/d": self.d,
                "nigt/round": np.array([self.round], np.int64)}

    def load_state_arrays(self, arrays: Dict[str, np.ndarray]) -> None:
        self.theta = np.asarray(arrays["nigt/theta"], np.float64).copy()
        self.prev = np.asarray(arrays["nigt/theta_prev"], np.float64).copy()
        self.d = np.asarray(arrays["nigt/d"], np.float64).copy()
        self.round = int(np.asarray(arrays["nigt/round"])[0])


# --------------------------------------------------------------------------------------------------
# a round under an aggregation rule (hpcmarl.algos.aggregation: the rule objects)
# --------------------------------------------------------------------------------------------------
class Aggregator:
    """One learner's share of a round: sums (per actor for a ``per_actor`` rule: Malenia) of accepted gradients.

    ``local_sum()`` is what the learners all-reduce; :meth:`combine` turns the reduced sum and the
    reduced per-actor counts into the round's gradient estimate g_t."""

    def __init__(self, rule: Union[str, Rule], n_actors: int, dim: int):
        self.rule, self.n, self.dim = aggregation.get(rule), n_actors, dim
        self.sums: Dict[int, np.ndarray] = {}
        self.counts = np.zeros(n_actors, np.int64)

    def begin(self) -> None:
        self.sums = {}
        self.counts[:] = 0

    def add(self, actor: int, grad: np.ndarray) -> None:
        key = actor if self.rule.per_actor else 0
        if key not in self.sums:
            self.sums[key] = np.zeros(self.dim, np.float64)
        self.sums[key] += grad
        self.counts[actor] += 1

    def local_sum(self) -> np.ndarray:
        out = np.zeros(self.dim, np.float64)
        for a in sorted(self.sums):  # fixed order: the same arrivals give the same bits
            out += self.sums[a] / self.counts[a] if self.rule.per_actor else self.sums[a]
        return out

    def combine(self, total: np.ndarray, counts: np.ndarray) -> np.ndarray:
        return self.rule.combine(total, counts, self.n)


class LocalGate:
    """When a round closes, judged on the counts one learner sees: every actor's (one learner), or only its own
    actors' (a rule without shared counters: each learner waits for its own actors' quotas). Several learners under a
    rule with shared counters (Rennala, Malenia) use ``hpcmarl.roles.counter_gate.CounterGate`` instead."""

    def __init__(self, rule: Union[str, Rule], n_actors: int, mine: Sequence[int]):
        self.rule, self.n, self.mine = aggregation.get(rule), n_actors, list(mine)
        self.counts = np.zeros(n_actors, np.int64)
        self.M = 0

    def begin(self, M: int) -> None:
        self.M = M
        self.counts[:] = 0

    def closed(self) -> bool:
        return self.rule.closed(self.counts[self.mine], self.M, self.n)

    def offer(self, actor: int) -> bool:
        """Take a ticket for one gradient of ``actor``; False = the round has no room for it."""
        if not self.rule.accepts(self.counts[self.mine], self.counts[actor], self.M, self.n):
            return False
        self.counts[actor] += 1
        return True

    def close(self) -> None:
        pass


class Round:
    """The learner's side of one round: accept gradients of this round while the gate has room, drop
    all others (computed for an earlier round, or arriving after the round closed)."""

    def __init__(self, rule: Union[str, Rule], n_actors: int, dim: int, gate):
        self.agg = Aggregator(rule, n_actors, dim)
        self.gate = gate
        self.dropped = np.zeros(n_actors, np.int64)
        self.id = -1

    def begin(self, round_id: int, M: int) -> None:
        self.id = round_id
        self.agg.begin()
        self.gate.begin(M)
        self.dropped[:] = 0

    def offer(self, round_id: int, actor: int, grad: np.ndarray) -> bool:
        if round_id == self.id and self.gate.offer(actor):
            self.agg.add(actor, grad)
            return True
        self.dropped[actor] += 1
        return False

    def closed(self) -> bool:
        return self.gate.closed()


# --------------------------------------------------------------------------------------------------
# event-queue simulation (one learner, workers with given compute times)
# --------------------------------------------------------------------------------------------------
def simulate(kind: Union[str, Rule], theta0: np.ndarray,
             grad_fn: Callable[[int, np.ndarray, np.random.Generator], np.ndarray],
             times: Sequence[float], rounds: int, M: int, M_init: Optional[int] = None, lr: float = 0.05,
             momentum: float = 0.1, seed: int = 0, trace: Optional[List] = None) -> dict:
    """Run NIGT with aggregation rule ``kind`` (a name or a rule object) against simulated workers: worker i needs
    ``times[i]`` time units per gradient, restarts at the new query point when a round closes (in-flight work is
    abandoned, as the actors do) and, under a rule with a quota (``allreduce``), idles after it. ``grad_fn(i, x, rng)``
    is worker i's stochastic gradient at x. Returns the final NIGT state, the simulated time and per
    worker accepted counts; ``trace`` (a list) receives ``(round, worker, accepted)`` per arrival."""
    rng = np.random.default_rng(seed)
    n = len(times)
    nigt = NIGT(theta0, lr, momentum)
    rule = aggregation.get(kind)
    rnd = Round(rule, n, np.asarray(theta0).size, LocalGate(rule, n, range(n)))
    now = 0.0
    accepted = np.zeros(n, np.int64)
    for _ in range(rounds):
        m = M_init if (nigt.round == 0 and M_init) else M
        x = nigt.query_point()
        rnd.begin(nigt.round, m)
        q = rule.quota(m, n)
        heap = [(now + times[i], i) for i in range(n)]
        heapq.heapify(heap)
        while not rnd.closed():
            now, i = heapq.heappop(heap)
            ok = rnd.offer(nigt.round, i, grad_fn(i, x, rng))
            if trace is not None:
                trace.append((nigt.round, i, ok))
            if not q or rnd.agg.counts[i] < q:
                heapq.heappush(heap, (now + times[i], i))
        accepted += rnd.agg.counts
        nigt.step(rnd.agg.combine(rnd.agg.local_sum(), rnd.agg.counts))
    return {"nigt": nigt, "time": now, "accepted": accepted}


def gaussian_target_grad(targets: Sequence[float], std: float = 0.5):
    """Worker i's REINFORCE gradient for the 1-D task ``a ~ N(theta, std^2)``, reward ``-(a - targets[i])^2``
    (docs/algorithms/nigt.md#heterogeneous-environments)."""
    def fn(i: int, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        a = x[0] + std * rng.standard_normal()
        r = -(a - targets[i]) ** 2
        return np.array([r * (a - x[0]) / std ** 2])
    return fn
