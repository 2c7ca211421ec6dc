"""The batched-environment interface: ``E`` copies of one multi-agent environment stepped in one call, arrays in and
arrays out (no MPI).

Actors, the serial mode, ``evaluate`` and the profiler see only this interface. :class:`hpcmarl.envs.vec.VecEnv`
implements it by stepping PettingZoo copies one by one in Python; the JaxMARL and VMAS adapters
(``hpcmarl.envs.jaxmarl``, ``hpcmarl.envs.vmas``) implement it with one jitted / torch-batched call over all copies.

Arrays, per policy group ``g`` of :attr:`spec` (``n_g`` agents in the spec's fixed order), updated in place:

    obs[g]         float32 [E, n_g, obs_dim_g]   the observation each agent acts on next (zeros: not alive)
    alive[g]       bool    [E, n_g]              the agent acts this step
    action_mask[g] bool    [E, n_g, mask_dim_g]  legal actions (all True where the env has no masks)
    state          float32 [E, state_dim] | None the global state (centralized critics, QMIX's mixer)
    final_obs[g]   float32 [E, n_g, obs_dim_g]   after step(): last observations of agents the step truncated
    final_state    float32 [E, state_dim] | None after step(): last global state of copies the step truncated

``step(actions)`` takes per-group actions ``[E, n_g]`` (discrete) or ``[E, n_g, act_dim]`` (continuous) and returns
``(reward, terminated, truncated, finished)``: per-group ``[E, n_g]`` arrays and the :class:`EpisodeStat` rows of
the episodes the step ended. A copy whose episode ended is reset at once (``obs`` then holds its next episode's first
observation). Every episode starts from an explicit seed, the ``resets``-th of the stream of ``seed``
(:func:`episode_seed`), so :meth:`seeds_state` / :meth:`restore_seeds` make the env side of a resume exact.

An env whose step runs asynchronously may step its copies in parts (the JaxMARL adapter with ``env.parts`` > 1): it
has ``parts`` (the rows of each), ``step_async(k, actions)`` and ``step_wait(k)``, a step of part ``k`` split into its
start and its results, so that it computes one part's step while the caller acts for another (the Sampler's
double-buffered sampling). An env without ``parts`` steps all its copies together.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np

from hpcmarl.envs.spec import EnvSpec

Arrays = Dict[str, np.ndarray]


@dataclass
class EpisodeStat:
    env: int
    length: int
    returns: Dict[str, float]  # per group: summed over the group's agents
    won: float = float("nan")  # a battle's outcome where the env has one (SMAX: 1 = every enemy unit dead while an
    # allied one lives, else 0); NaN where it has none


def episode_seed(seed: int, n: int) -> int:
    """The ``n``-th episode seed of the stream of ``seed`` (independent across seeds and counters)."""
    return int(np.random.SeedSequence([int(seed) % 2 ** 63, int(n)]).generate_state(1)[0] % 2 ** 31)


def episode_seeds(seed: int, first: int, count: int) -> np.ndarray:
    """``count`` consecutive episode seeds of the stream of ``seed``, from the ``first``-th (the same numbers as
    :func:`episode_seed`; computed for all at once where ``seed`` and the counters fit 32 bits: a batched env
    resetting thousands of copies in one step asks for thousands)."""
    return episode_seeds_at(seed, np.arange(first, first + count, dtype=np.int64))


def episode_seeds_at(seed: int, ns: np.ndarray) -> np.ndarray:
    """The episode seeds number ``ns`` of the stream of ``seed`` (:func:`episode_seed` of each)."""
    s, ns = int(seed) % 2 ** 63, np.asarray(ns, np.int64)
    if ns.size and s < 2 ** 32 and ns.min() >= 0 and ns.max() < 2 ** 32:
        return _seed_sequence_words(s, ns.astype(np.uint64))
    return np.array([episode_seed(seed, int(n)) for n in ns], np.int64)


def _seed_sequence_words(seed: int, ns: np.ndarray) -> np.ndarray:
    """``SeedSequence([seed, n]).generate_state(1)[0] % 2**31`` for every ``n`` of ``ns`` (``seed`` and ``ns`` below
    2**32: one 32-bit entropy word each), vectorised: numpy's SeedSequence hash (pool of 4 words) in uint64
    arithmetic masked to 32 bits. tests/unit/test_batched_jax.py checks it against SeedSequence."""
    m32, sh = np.uint64(0xFFFFFFFF), np.uint64(16)
    hash_a = 0x43B0D7E5

    def hashmix(v):
        nonlocal hash_a
        v = (v ^ np.uint64(hash_a)) & m32
        hash_a = (hash_a * 0x931E8875) & 0xFFFFFFFF
        v = (v * np.uint64(hash_a)) & m32
        return v ^ (v >> sh)

    def mix(x, y):
        r = (np.uint64(0xCA01F9DD) * x - np.uint64(0x4973F715) * y) & m32
        return r ^ (r >> sh)

    zero = np.zeros_like(ns)
    pool = [hashmix(w) for w in (np.full_like(ns, seed), ns, zero, zero)]
    for i in range(4):
        for j in range(4):
            if i != j:
                pool[j] = mix(pool[j], hashmix(pool[i]))
    hash_b = 0x8B51F9DD
    v = (pool[0] ^ np.uint64(hash_b)) & m32
    v = (v * np.uint64((hash_b * 0x58F38DED) & 0xFFFFFFFF)) & m32
    return ((v ^ (v >> sh)) % np.uint64(2 ** 31)).astype(np.int64)


class BatchedEnv:
    """Base of every batched environment (see the module docstring for the arrays and their shapes).

    Subclasses set :attr:`spec`, :attr:`num_envs`, :attr:`seed`, :attr:`resets`, :attr:`episode_seeds`, the arrays,
    :attr:`errors` (env errors so far; copies re-created under ``actors.env_errors: reset``) and :attr:`failed` (the
    copies that raised during the last step), and implement :meth:`reset`, :meth:`step`, :meth:`restore_seeds`,
    :meth:`episode_lengths` and :meth:`close`.
    """

    spec: EnvSpec
    num_envs: int
    seed: int
    resets: int = 0
    errors: int = 0
    obs: Arrays
    alive: Arrays
    action_mask: Arrays
    final_obs: Arrays
    state: Optional[np.ndarray] = None
    final_state: Optional[np.ndarray] = None

    def __init__(self):
        self.failed: List[int] = []

    def reset(self, reseed: bool = True) -> Arrays:
        """Reset every copy with the next seeds of the stream of :attr:`seed` (from its start with ``reseed``, so
        the same seed gives the same episodes); returns :attr:`obs`."""
        raise NotImplementedError

    def step(self, actions: Arrays) -> Tuple[Arrays, Arrays, Arrays, List[EpisodeStat]]:
        raise NotImplementedError

    def seeds_state(self) -> np.ndarray:
        """``[E + 2]``: the seed each copy's current episode started from, the stream's seed, the reset counter."""
        return np.append(np.asarray(self.episode_seeds, np.int64), [self.seed, self.resets])

    def restore_seeds(self, state: np.ndarray) -> None:
        """Restart every copy's current episode from its seed in ``state`` (:meth:`seeds_state`) and continue the
        stream from its counter."""
        raise NotImplementedError

    def episode_lengths(self) -> np.ndarray:
        """``[E]``: steps so far of each copy's unfinished episode (discarded if the run stops now)."""
        raise NotImplementedError

    def close(self) -> None:
        pass
