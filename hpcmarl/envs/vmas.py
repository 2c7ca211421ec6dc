"""VMAS scenarios as a :class:`~hpcmarl.envs.batched.BatchedEnv`: all ``E`` copies stepped by one torch-batched
``Environment.step`` on the CPU (no MPI; ``vmas`` is an optional dependency, imported here only).

``VmasEnv("navigation", E, seed, {"n_agents": 3, "max_steps": 100})`` makes ``vmas.make_env(scenario="navigation",
num_envs=E, device="cpu", continuous_actions=True, max_steps=100, n_agents=3)``: ``continuous_actions`` (default
true) and ``max_steps`` (default 100; ``None``: episodes end only when the scenario says so) are VMAS's, every other
key goes to the scenario (a key it does not use is an error, not VMAS's warning). Arrays as
:class:`~hpcmarl.envs.vec.VecEnv` fills them: every VMAS agent acts every step (``alive`` all true, no action masks),
observations stacked per group straight from VMAS's tensors, rewards per agent as VMAS gives them (shared or not, as
the scenario's kwargs say). Continuous actions are clipped to the Box bounds, discrete ones sent as int64.
A copy ends by the scenario's ``done`` (terminated) or at ``max_steps`` (truncated: its ``final_obs`` kept); the
copies that ended are reset at once. VMAS has no global state: ``state_dim`` is 0 and centralized critics read the
joint observation.

Seeds (exact resume, the global RNG untouched): VMAS draws from torch's (numpy's, Python's) global generators inside
its own saved RNG state. A copy reset alone starts from the next seed of the stream (:func:`episode_seed`, as in
VecEnv): the global generators are seeded with it around ``reset_world_at(i)`` and put back afterwards. When every
copy ends in the same step (fixed-length episodes) they are reset in one batched VMAS reset from one stream seed
``s`` (stored as ``-s - 1`` for every copy in :meth:`seeds_state`; the stream still advances by ``E``). Randomness
inside a step or an observation (motor noise, scripted opponents, observation noise) draws from VMAS's own torch
state, which every VMAS env of the process shares: it is set before each step and each observation after resets
from ``(seed, resets, steps so far of the unfinished episodes)``, all restored by :meth:`restore_seeds`, so a resume
at episode starts is exact for every scenario that draws from torch only there (all of vmas 1.5's).

``actors.env_errors``: a copy whose observation or reward holds NaN raised (as a PettingZoo copy raising in step()):
"abort" stops the run, "reset" logs it (:func:`hpcmarl.envs.vec.env_error`), discards the episode (truncated at its
last good observation, no :class:`EpisodeStat`) and resets the copy. An exception from VMAS's batched step itself
belongs to no copy and propagates.
"""
from __future__ import annotations

import random
import warnings
from contextlib import contextmanager
from typing import Callable, Dict, List, Optional

import numpy as np
import torch

from hpcmarl.envs.batched import BatchedEnv, EpisodeStat, episode_seed
from hpcmarl.envs.registry import EnvError
from hpcmarl.envs.spec import EnvSpec, build_spec
from hpcmarl.envs.vec import env_error

PREFIX = "vmas:"
INSTALL = 'vmas is not installed: pip install -e ".[vmas]" (or make setup EXTRAS=vmas)'
DEFAULTS = {"continuous_actions": True, "max_steps": 100}
# make_env arguments the adapter sets itself (a config may not)
RESERVED = ("num_envs", "device", "seed", "dict_spaces", "terminated_truncated", "wrapper", "wrapper_kwargs",
            "multidiscrete_actions", "grad_enabled", "clamp_actions", "scenario")


def _vmas():
    try:
        import vmas
    except ImportError:
        raise EnvError(INSTALL) from None
    return vmas


def scenario_of(task: str) -> str:
    """``"vmas:navigation"`` or ``"navigation"`` -> ``"navigation"``."""
    return task[len(PREFIX):] if task.startswith(PREFIX) else task


@contextmanager
def _global_rng_kept():
    """Whatever is seeded or drawn inside, torch's, numpy's and Python's global generators are as before after."""
    t, n, p = torch.get_rng_state(), np.random.get_state(), random.getstate()
    try:
        yield
    finally:
        torch.set_rng_state(t)
        np.random.set_state(n)
        random.setstate(p)


def _seed_all(s: int) -> None:
    torch.random.default_generator.manual_seed(int(s))  # the CPU generator only (VMAS runs on the CPU here)
    np.random.seed(int(s))
    random.seed(int(s))


def make_vmas(task: str, num_envs: int, kwargs: Optional[dict] = None):
    """``vmas.make_env`` of scenario ``task`` with ``num_envs`` copies on the CPU (see the module docstring for
    ``kwargs``); raises :class:`EnvError` in one line for a missing vmas, an unknown scenario or a bad kwarg."""
    vmas = _vmas()
    name = scenario_of(task)
    known = sorted(set(vmas.scenarios) | set(vmas.mpe_scenarios) | set(vmas.debug_scenarios))
    if name not in known:
        raise EnvError(f"unknown VMAS scenario {name!r} (known: {', '.join(known)})")
    kw = {**DEFAULTS, **(kwargs or {})}
    taken = sorted(set(kw) & set(RESERVED))
    if taken:
        raise EnvError(f"env.kwargs for {PREFIX}{name}: {taken} are set by hpcmarl's VMAS adapter")
    cont, max_steps = bool(kw.pop("continuous_actions")), kw.pop("max_steps")
    with _global_rng_kept(), warnings.catch_warnings():
        # VMAS only warns about scenario kwargs it did not use ("will turn into an error in future versions")
        warnings.filterwarnings("error", message="Scenario kwargs", category=UserWarning)
        try:
            return vmas.make_env(scenario=name, num_envs=int(num_envs), device="cpu", continuous_actions=cont,
                                 max_steps=None if max_steps is None else int(max_steps), terminated_truncated=True,
                                 **kw)
        except (UserWarning, TypeError, ValueError) as e:
            raise EnvError(f"env.kwargs for {PREFIX}{name}: {e}") from None


class _Spaces:
    """What :func:`build_spec` reads of a PettingZoo env, from a VMAS env (gym spaces -> gymnasium ones)."""

    def __init__(self, env, name: str):
        from gymnasium import spaces

        self.possible_agents = [a.name for a in env.agents]
        self._obs, self._act = {}, {}
        for a, o, s in zip(self.possible_agents, env.observation_space, env.action_space):
            if type(o).__name__ != "Box":
                raise EnvError(f"{name}: agent {a} has observation space {o}; only flat (Box) observations are "
                               f"supported")
            self._obs[a] = spaces.Box(-np.inf, np.inf, tuple(o.shape), np.float32)
            kind = type(s).__name__
            self._act[a] = (spaces.Discrete(int(s.n)) if kind == "Discrete" else
                            spaces.Box(np.asarray(s.low, np.float32), np.asarray(s.high, np.float32),
                                       dtype=np.float32) if kind == "Box" else s)  # build_spec refuses the rest

    def observation_space(self, agent):
        return self._obs[agent]

    def action_space(self, agent):
        return self._act[agent]


def _spec(env, name: str, policy_map) -> EnvSpec:
    return build_spec(_Spaces(env, name), name, policy_map, with_state=False)  # VMAS has no global state


def probe(task: str, kwargs: Optional[dict] = None, policy_map=None, with_state: bool = False) -> EnvSpec:
    """The spec of ``VmasEnv(task, ..., kwargs, policy_map, with_state)``, from a one-copy env."""
    return _spec(make_vmas(task, 1, kwargs), PREFIX + scenario_of(task), policy_map)


class VmasEnv(BatchedEnv):
    """``num_envs`` copies of a VMAS scenario stepped by one batched call (see the module docstring)."""

    def __init__(self, task: str, num_envs: int, seed: int, kwargs: Optional[dict] = None, policy_map=None,
                 with_state: bool = False, obs_transform: Optional[Callable] = None, reward_scale: float = 1.0,
                 on_error: str = "abort", max_errors: int = 0):
        super().__init__()
        self.name = PREFIX + scenario_of(task)
        self.env = make_vmas(task, num_envs, kwargs)
        self.spec = _spec(self.env, self.name, policy_map)  # with_state: VMAS has none, state_dim stays 0
        E = self.num_envs = int(num_envs)
        self.seed = int(seed)
        self.on_error, self.max_errors, self.errors = on_error, int(max_errors), 0
        self.obs_transform = obs_transform  # applied to whole [rows, n_g, obs_dim] arrays (actors: o * scale)
        self.reward_scale = float(reward_scale)
        self.resets = 0
        self.episode_seeds = np.zeros(E, np.int64)
        index = {a.name: k for k, a in enumerate(self.env.agents)}
        self._members = {g.name: [index[a] for a in g.agents] for g in self.spec.groups}  # VMAS agent indices
        self.obs = {g.name: np.zeros((E, g.n, g.obs_dim), np.float32) for g in self.spec.groups}
        self._obs_t = {n: torch.from_numpy(a) for n, a in self.obs.items()}  # the same memory, as torch tensors
        self.alive = {g.name: np.ones((E, g.n), bool) for g in self.spec.groups}
        self.action_mask = {g.name: np.ones((E, g.n, g.mask_dim), bool) for g in self.spec.groups}
        self.final_obs = {g.name: np.zeros((E, g.n, g.obs_dim), np.float32) for g in self.spec.groups}
        self.state = self.final_state = None
        self._ep_ret = {g.name: np.zeros(E, np.float64) for g in self.spec.groups}
        self._ep_len = np.zeros(E, np.int64)
        self._had_final = False
        self._gen = torch.Generator()
        self._vmas_rng = getattr(self.env, "vmas_random_state", None)  # VMAS's saved [torch, numpy, python] state

    # ---- helpers -------------------------------------------------------------------------------
    def _stacked(self, g: str, tensors: List[torch.Tensor]) -> torch.Tensor:
        return torch.stack([tensors[k].reshape(self.num_envs, -1) for k in self._members[g]], dim=1)

    def _error(self, i: int, what: str) -> None:
        """Copy ``i`` returned NaN in ``what``: "abort" raises, "reset" logs and counts it (the caller resets)."""
        try:
            raise FloatingPointError(f"{self.name}: env copy {i} returned NaN in its observation or reward ({what})")
        except FloatingPointError as e:
            self.errors = env_error(self.name, i, what, e, self.on_error, self.errors, self.max_errors)
        self.failed.append(i)

    def _seed_vmas(self, what: int) -> None:
        """VMAS's torch state for the next step (``what`` 1) or observation after resets (2), from what
        :meth:`restore_seeds` restores."""
        s = int(np.random.SeedSequence([self.seed % 2 ** 63, self.resets, int(self._ep_len.sum()), what])
                .generate_state(1)[0] % 2 ** 31)
        if self._vmas_rng is None:
            self.env.seed(s)
        else:
            self._vmas_rng[0] = self._gen.manual_seed(s).get_state()

    def _start(self, idx: np.ndarray, seeds: Optional[np.ndarray] = None, batch_seed: Optional[int] = None) -> None:
        """Start new episodes in copies ``idx`` (ascending): from ``seeds`` (one per copy), from ``batch_seed`` (all
        copies, one batched reset), or from the stream (batched when ``idx`` is every copy)."""
        E = self.num_envs
        if seeds is None and batch_seed is None and len(idx) == E:
            batch_seed = episode_seed(self.seed, self.resets)
            self.resets += E
        scenario = self.env.scenario
        with _global_rng_kept():
            if batch_seed is not None:
                idx = np.arange(E)
                _seed_all(batch_seed)
                scenario.env_reset_world_at(None)
                self.episode_seeds[:] = -int(batch_seed) - 1
            else:
                for n, i in enumerate(idx):
                    if seeds is None:
                        s = episode_seed(self.seed, self.resets)
                        self.resets += 1
                    else:
                        s = int(seeds[n])
                    self.episode_seeds[i] = s
                    _seed_all(s)
                    scenario.env_reset_world_at(int(i))
        self.env.steps[torch.as_tensor(idx)] = 0
        self._ep_len[idx] = 0
        self._seed_vmas(2)  # observation noise (joint_passage_size) draws
        obs = self.env.get_from_scenario(get_observations=True, get_rewards=False, get_infos=False,
                                         get_dones=False)[0]
        bad = np.zeros(len(idx), bool)
        for g in self.spec.groups:
            self._ep_ret[g.name][idx] = 0.0
            rows = self._stacked(g.name, obs).numpy()[idx]
            bad |= np.isnan(rows).any(axis=(1, 2))
            self.obs[g.name][idx] = rows if self.obs_transform is None else self.obs_transform(rows)
        if bad.any():
            for i in idx[bad]:
                self._error(int(i), "reset")
            self._start(idx[bad])

    # ---- the interface -------------------------------------------------------------------------
    def reset(self, reseed: bool = True):
        if reseed:
            self.resets = 0
        self._start(np.arange(self.num_envs))
        return self.obs

    def seeds_state(self) -> np.ndarray:
        """``[E + 2]``: each copy's episode seed (``-s - 1``: the copies started together in one batched reset from
        ``s``), the stream's seed, the reset counter."""
        return super().seeds_state()

    def restore_seeds(self, state: np.ndarray) -> None:
        state = np.asarray(state, np.int64)
        seeds = state[:self.num_envs]
        self.seed, self.resets = int(state[-2]), int(state[-1])
        if (seeds < 0).all() and (seeds == seeds[0]).all():
            self._start(np.arange(self.num_envs), batch_seed=int(-seeds[0] - 1))
        else:  # copy by copy; one from an earlier batched reset was mid-episode and restarts from that seed alone
            self._start(np.arange(self.num_envs), seeds=np.where(seeds < 0, -seeds - 1, seeds))

    def step(self, actions: Dict[str, np.ndarray]):
        """Step every copy with per-group actions ``[E, n_g]`` (discrete) or ``[E, n_g, act_dim]`` (continuous);
        returns ``(reward, terminated, truncated, finished)`` as :meth:`VecEnv.step` does."""
        E = self.num_envs
        if self._had_final:
            for a in self.final_obs.values():
                a[:] = 0.0
        self._had_final = False
        self.failed = []
        acts: List[Optional[torch.Tensor]] = [None] * len(self.env.agents)
        for g in self.spec.groups:
            if g.discrete:
                t = torch.as_tensor(np.asarray(actions[g.name]), dtype=torch.int64)
                for j, k in enumerate(self._members[g.name]):
                    acts[k] = t[:, j:j + 1]
            else:
                t = torch.from_numpy(np.clip(np.asarray(actions[g.name], np.float32), g.act_low, g.act_high))
                for j, k in enumerate(self._members[g.name]):
                    acts[k] = t[:, j]
        self._seed_vmas(1)
        obs, rews, te, tr, _ = self.env.step(acts)
        obs = [o.reshape(E, -1) for o in obs]
        rews = [r.reshape(E) for r in rews]  # [E] (a few scenarios give [E, 1])
        nan = torch.zeros(E, dtype=torch.bool)
        for o, r in zip(obs, rews):
            nan |= o.isnan().any(-1) | r.isnan()
        bad = nan.numpy()
        bad_idx = np.flatnonzero(bad)
        prev = {}
        if bad_idx.size:
            if self.on_error != "reset":
                self._error(int(bad_idx[0]), "step")  # raises
            prev = {n: a[bad_idx] for n, a in self.obs.items()}  # the last good observations (copies)
        te, tr = te.numpy() & ~bad, tr.numpy() | bad
        final = tr & ~te  # the copies whose final observation a learner bootstraps from
        rew, term, trunc = {}, {}, {}
        for g in self.spec.groups:
            n = g.name
            torch.stack([obs[k] for k in self._members[n]], dim=1, out=self._obs_t[n])
            if self.obs_transform is not None:
                self.obs[n][:] = self.obs_transform(self.obs[n])
            r = torch.stack([rews[k] for k in self._members[n]], dim=1).numpy() * np.float32(self.reward_scale)
            r[bad] = 0.0
            rew[n] = r
            term[n] = np.repeat(te[:, None], g.n, axis=1)
            trunc[n] = np.repeat(tr[:, None], g.n, axis=1)
            self._ep_ret[n] += r.sum(axis=1)
            if final.any():
                self.final_obs[n][final] = self.obs[n][final]
                if bad_idx.size:
                    self.final_obs[n][bad_idx] = prev[n]
        self._had_final = bool(final.any())
        self._ep_len += 1
        ended = np.flatnonzero(te | tr)
        finished = [EpisodeStat(int(i), int(self._ep_len[i]), {g: float(v[i]) for g, v in self._ep_ret.items()})
                    for i in ended if not bad[i]]
        for i in bad_idx:
            self._error(int(i), "step")
        if ended.size:
            self._start(ended)
        return rew, term, trunc, finished

    def episode_lengths(self) -> np.ndarray:
        return self._ep_len.copy()

    def close(self) -> None:
        viewer = getattr(self.env, "viewer", None)
        if viewer is not None:
            viewer.close()
