"""JaxMARL environments as a :class:`~hpcmarl.envs.batched.BatchedEnv` (``env.name: jaxmarl:<env id>``; no MPI).

All ``E`` copies are one batched JaxMARL state stepped by ONE jitted call per step: ``vmap(env.step_env)`` (JaxMARL's
step without its own auto-reset), then, only when some copy's episode ended (``lax.cond`` on the batch), a
``vmap(env.reset)`` whose results replace the ended copies (``jnp.where``), the action masks and the per-group arrays
stacked inside the same call; each output array crosses to numpy once (``np.asarray`` of a CPU jax array: no copy).

Seeds: the episode copy ``i`` starts is the ``n``-th of the stream of ``seed`` (:func:`episode_seed`, copies reset in
index order as in :class:`~hpcmarl.envs.vec.VecEnv`), its reset key ``jax.random.PRNGKey(episode seed)`` and the key
of its ``t``-th step ``fold_in(PRNGKey(episode seed), t)``: an episode is a function of its seed and the actions, so
:meth:`restore_seeds` of :meth:`seeds_state` is exact.

Episode ends: a copy whose ``dones["__all__"]`` is set ended; *truncated* when its length reached the env's
``max_steps`` (the time limit; SMAX: unless a team was wiped out), else *terminated*. Per-agent ``dones`` mid-episode
(SMAX units dying) terminate that agent: it is no longer alive (zeros, no reward: like a PettingZoo agent that left,
so SMAX's reward to dead units is dropped). Masks: ``env.get_avail_actions(state)`` where the env has it (SMAX),
else all True. Global state (``with_state``): the env's ``world_state`` observation (SMAX); an env without one has no
state (``algo.critic_input=obs``). Outcome: a battle's episode (SMAX) is won (``EpisodeStat.won`` = 1) when it
ends with every enemy unit dead and an allied one alive, the episodes JaxMARL's ``SMAXLogWrapper`` counts as won
(its win bonus); other envs report NaN. Errors: a jitted env cannot raise per copy, so NaN in a copy's observations or
rewards is that copy's env error (``on_error``: "reset" re-starts it and discards its episode, "abort" raises).
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
import sys
from typing import Dict, List, Optional

import numpy as np

from hpcmarl.envs.batched import BatchedEnv, EpisodeStat, episode_seeds_at
from hpcmarl.envs.jaxmarl_jit import compile_step
from hpcmarl.envs.registry import EnvError
from hpcmarl.envs.spec import EnvSpec, action_descr, group_specs
from hpcmarl.envs.vec import env_error

PREFIX = "jaxmarl:"
_COMPILED: Dict[str, tuple] = {}  # configuration -> (env, spec, masked, max_steps, (step_fn, reset_fn))
INSTALL = 'pip install -e ".[jax]" (or make setup EXTRAS=jax)'


def _modules():
    """``(jax, jax.numpy, jaxmarl)``; a missing package is a one-line :class:`EnvError` naming the extra."""
    try:
        import jax
        import jax.numpy as jnp
        if "jaxmarl" not in sys.modules:
            with _quiet():
                import jaxmarl
        import jaxmarl
    except ModuleNotFoundError as e:
        raise EnvError(f"JaxMARL environments need the Python package {e.name!r}: {INSTALL}") from None
    return jax, jnp, jaxmarl


@contextlib.contextmanager
def _quiet():
    """Nothing printed to stdout (jaxmarl's import prints about its optional submodules, and its MABrax module
    resets ``sys.stdout`` to ``sys.__stdout__`` on the way): ``hpcmarl ... --json`` output stays JSON."""
    out, real = sys.stdout, sys.__stdout__
    sys.stdout = sys.__stdout__ = io.StringIO()
    try:
        yield
    finally:
        sys.stdout, sys.__stdout__ = out, real


def make(task: str, kwargs: Optional[dict] = None):
    """``jaxmarl.make(task, **kwargs)``; a SMAX ``scenario`` given by map name (``"3m"``) becomes JaxMARL's scenario
    object."""
    _, _, jaxmarl = _modules()
    kw = dict(kwargs or {})
    if isinstance(kw.get("scenario"), str):
        from jaxmarl.environments.smax import map_name_to_scenario

        try:
            kw["scenario"] = map_name_to_scenario(kw["scenario"])
        except KeyError:
            from jaxmarl.environments.smax.smax_env import MAP_NAME_TO_SCENARIO

            raise EnvError(f"env.kwargs.scenario {kw['scenario']!r} of {PREFIX}{task}: not a SMAX map (known: "
                           f"{', '.join(sorted(MAP_NAME_TO_SCENARIO))})") from None
    from jaxmarl.registration import registered_envs

    if task not in registered_envs:
        raise EnvError(f"unknown JaxMARL environment {task!r} (env.name {PREFIX}{task}; known: "
                       f"{', '.join(registered_envs)})")
    try:
        return jaxmarl.make(task, **kw)
    except TypeError as e:
        raise EnvError(f"env.kwargs for {PREFIX}{task}: {e}") from None


def _shapes(env):
    """Shapes of a reset's observations, of the avail-actions masks (None: the env has none) and of the world state
    (None: none), found by tracing only."""
    jax, _, _ = _modules()
    key = jax.random.PRNGKey(0)
    obs, state = jax.eval_shape(env.reset, key)
    try:
        masks = jax.eval_shape(env.get_avail_actions, state)
    except NotImplementedError:
        masks = None
    ws = obs.get("world_state") if isinstance(obs, dict) else None
    return obs, masks, ws


def _build_spec(env, name: str, policy_map, with_state: bool):
    """``(spec, has masks)`` of a made env."""
    from jaxmarl.environments import spaces

    obs, masks, ws = _shapes(env)
    out = group_specs(name, list(env.agents), policy_map, lambda a: (
        tuple(int(x) for x in obs[a].shape), action_descr(env.action_space(a), spaces.Discrete, spaces.Box, name, a)))
    state_dim = 0
    if with_state:
        if ws is None:
            raise EnvError(f"{name} has no global state (no world_state observation); use algo.critic_input=obs")
        state_dim = int(np.prod(ws.shape))
    return EnvSpec(name, out, state_dim), masks is not None


def probe(task: str, kwargs=None, policy_map=None, with_state: bool = False) -> EnvSpec:
    """The :class:`EnvSpec` of ``jaxmarl:<task>`` (groups, spaces, state), found without stepping it."""
    return _build_spec(make(task, kwargs), PREFIX + task, policy_map, with_state)[0]


def episode_limit(task: str, kwargs=None) -> int:
    """The longest episode of ``jaxmarl:<task>``: ``max_steps + 1`` (MPE and SMAX end an episode at the step that
    starts with the counter at ``max_steps``; MPE's ``max_steps=25`` episodes are 26 steps long); 0: no time limit."""
    limit = getattr(make(task, kwargs), "max_steps", None)
    return int(limit) + 1 if isinstance(limit, (int, np.integer)) else 0


def describe(task: str, kwargs=None, policy_map=None) -> List[str]:
    """``hpcmarl validate --probe-env`` lines for ``jaxmarl:<task>``."""
    env = make(task, kwargs)
    spec, masked = _build_spec(env, PREFIX + task, policy_map, False)
    ws = _shapes(env)[2]
    limit = getattr(env, "max_steps", None)
    state = f"world_state of shape {tuple(ws.shape)}" if ws is not None else "no global state (critic_input=obs only)"
    kind = "cooperative" if len(spec.groups) == 1 else "several groups"
    lines = [f"{PREFIX}{task}: batched JaxMARL env (jit + vmap), {kind}, {state}, "
             f"time limit {limit if limit is not None else 'none'}"]
    for g in spec.groups:
        act = (f"Discrete({g.n_actions})" if g.discrete
               else f"Box({g.act_dim}) in [{g.act_low.min():g}, {g.act_high.max():g}]")
        lines.append(f"group {g.name}: {g.n} agent(s) {g.agents}, obs {g.obs_shape}, actions {act}"
                     + (", action masks (get_avail_actions)" if masked else ""))
    return lines


class JaxMarlEnv(BatchedEnv):
    """``num_envs`` copies of the JaxMARL environment ``task`` stepped by one jitted, vmapped call per step."""

    def __init__(self, task: str, num_envs: int, seed: int, kwargs=None, policy_map=None, with_state: bool = False,
                 obs_transform=None, reward_scale: float = 1.0, on_error: str = "abort", max_errors: int = 0,
                 parts: int = 1):
        super().__init__()
        self.jax, self.jnp, _ = _modules()
        self.num_envs, self.seed, self.errors = int(num_envs), int(seed), 0
        K = int(parts)
        if K < 1 or self.num_envs % K:
            raise EnvError(f"env.parts {K}: must be >= 1 and divide env.num_envs {self.num_envs}")
        P = self.num_envs // K
        self._parts = [slice(k * P, (k + 1) * P) for k in range(K)]
        self._resets = [0] * K  # resets so far of each part (part k's j-th takes the stream's seed number j*K + k)
        self.on_error, self.max_errors = on_error, int(max_errors)
        self.obs_transform, self.reward_scale = obs_transform, float(reward_scale)
        # envs of one configuration share their compiled functions (a new actor env, evaluate, tests)
        key = json.dumps([task, kwargs or {}, P, policy_map, bool(with_state), self.reward_scale],
                         sort_keys=True, default=str)
        if key not in _COMPILED:
            self.env = make(task, kwargs)
            self.spec, self._masked = _build_spec(self.env, PREFIX + task, policy_map, with_state)
            limit = getattr(self.env, "max_steps", None)
            self.max_steps = int(limit) if isinstance(limit, (int, np.integer)) else None
            while len(_COMPILED) >= 8:
                _COMPILED.pop(next(iter(_COMPILED)))
            _COMPILED[key] = (self.env, self.spec, self._masked, self.max_steps, compile_step(self, P))
        self.env, spec, self._masked, self.max_steps, (self._step_fn, self._reset_fn) = _COMPILED[key]
        self.spec = copy.deepcopy(spec)
        E, S = self.num_envs, self.spec.state_dim
        gs = self.spec.groups
        self.obs = {g.name: np.zeros((E, g.n, g.obs_dim), np.float32) for g in gs}
        self.alive = {g.name: np.zeros((E, g.n), bool) for g in gs}
        self.action_mask = {g.name: np.ones((E, g.n, g.mask_dim), bool) for g in gs}
        self.final_obs = {g.name: np.zeros((E, g.n, g.obs_dim), np.float32) for g in gs}
        self.state = np.zeros((E, S), np.float32) if S else None
        self.final_state = np.zeros((E, S), np.float32) if S else None
        self.episode_seeds = np.zeros(E, np.int64)
        self._ep_ret = {g.name: np.zeros(E, np.float64) for g in gs}
        # per part: (batched env state, per-copy episode seeds, per-copy step index, alive per group), the part's next
        # seeds (numpy, device) and its step in flight (step_async's outputs, until step_wait)
        self._dev: list = [None] * K
        self._nxt: list = [None] * K
        self._nxt_dev: list = [None] * K
        self._pending: list = [None] * K

    # ---- seeds -------------------------------------------------------------------------------------
    @property
    def parts(self):
        """The rows of the copies stepped together (``env.parts`` equal slices; :meth:`step_async`)."""
        return self._parts

    @property
    def resets(self) -> int:
        """Episodes started so far, every part together."""
        return sum(self._resets)

    def _seeds(self, k: int, first: int, count: int) -> np.ndarray:
        """Part ``k``'s resets ``first .. first + count - 1``: the stream's seeds number ``j * K + k`` (one part:
        the stream itself, as :class:`~hpcmarl.envs.vec.VecEnv` takes it)."""
        return episode_seeds_at(self.seed, np.arange(first, first + count, dtype=np.int64) * len(self.parts) + k)

    def _next_seeds(self, k: int) -> np.ndarray:
        """The seeds of part ``k``'s next resets (the ``j``-th of its copies to end takes the ``j``-th)."""
        sl = self.parts[k]
        return self._seeds(k, self._resets[k], sl.stop - sl.start).astype(np.int32)

    def _start(self, seeds: np.ndarray) -> None:
        """Every copy starts an episode from ``seeds`` (one jitted call per part)."""
        jnp = self.jnp
        self.episode_seeds[:] = seeds
        for k, sl in enumerate(self.parts):
            state, out = self._reset_fn(jnp.asarray(seeds[sl], jnp.int32))
            self._dev[k] = (state, out["seeds"], out["t"], tuple(out[f"{g.name}/alive"] for g in self.spec.groups))
            self._nxt[k] = self._next_seeds(k)
            self._nxt_dev[k] = jnp.asarray(self._nxt[k])
            self._pending[k] = None
            self._write(out, sl)
        for g in self.spec.groups:
            self._ep_ret[g.name][:] = 0.0
            self.final_obs[g.name][:] = 0.0
        if self.final_state is not None:
            self.final_state[:] = 0.0

    def reset(self, reseed: bool = True):
        if reseed:
            self._resets = [0] * len(self.parts)
        seeds = np.zeros(self.num_envs, np.int64)
        for k, sl in enumerate(self.parts):
            seeds[sl] = self._seeds(k, self._resets[k], sl.stop - sl.start)
            self._resets[k] += sl.stop - sl.start
        self._start(seeds)
        return self.obs

    def seeds_state(self) -> np.ndarray:
        """``[E + 1 + K]``: the seed each copy's current episode started from, the stream's seed, each part's reset
        counter (one part: :meth:`BatchedEnv.seeds_state`'s layout)."""
        return np.concatenate([np.asarray(self.episode_seeds, np.int64), [self.seed], self._resets]).astype(np.int64)

    def restore_seeds(self, state: np.ndarray) -> None:
        state = np.asarray(state, np.int64)
        E, K = self.num_envs, len(self.parts)
        if state.shape != (E + 1 + K,):
            raise EnvError(f"{self.spec.name}: the checkpoint's env seeds are {state.size} numbers, this actor's "
                           f"{E} copies in {K} part(s) keep {E + 1 + K}: resume with the checkpoint's env.num_envs "
                           "and env.parts, or start fresh")
        self.seed, self._resets = int(state[E]), [int(x) for x in state[E + 1:]]
        self._start(state[:E])

    def episode_lengths(self) -> np.ndarray:
        return np.concatenate([np.asarray(d[2]) for d in self._dev]).astype(np.int64)

    # ---- stepping -------------------------------------------------------------------------------
    def _write(self, out: dict, sl: slice) -> None:
        """Copy the next observations, alive flags, masks and state of ``out`` into the arrays' rows ``sl``."""
        tf = self.obs_transform
        for g in self.spec.groups:
            n = g.name
            alive = np.asarray(out[f"{n}/alive"])
            self.alive[n][sl] = alive
            o = np.asarray(out[f"{n}/obs"])
            self.obs[n][sl] = o if tf is None else np.where(alive[..., None], tf(o), 0.0)
            if self._masked:
                self.action_mask[n][sl] = np.asarray(out[f"{n}/mask"])
        if self.state is not None:
            self.state[sl] = np.asarray(out["state"])

    def step(self, actions: Dict[str, np.ndarray]):
        if len(self.parts) == 1:
            self.step_async(0, actions)
            return self.step_wait(0)
        for k, sl in enumerate(self.parts):
            self.step_async(k, {n: a[sl] for n, a in actions.items()})
        res, failed = [], []
        for k in range(len(self.parts)):
            res.append(self.step_wait(k))
            failed += self.failed
        self.failed = failed
        merged = tuple({g.name: np.concatenate([r[j][g.name] for r in res]) for g in self.spec.groups}
                       for j in range(3))
        return merged + ([ep for r in res for ep in r[3]],)

    def step_async(self, k: int, actions: Dict[str, np.ndarray]) -> None:
        """Start part ``k``'s step with its copies' actions (the jitted call returns at once; the env computes while
        the caller goes on); :meth:`step_wait` takes its results."""
        jnp = self.jnp
        state, seeds, t, alive = self._dev[k]
        acts = tuple(jnp.asarray(actions[g.name], jnp.int32 if g.discrete else jnp.float32) for g in self.spec.groups)
        self._pending[k] = self._step_fn(state, acts, alive, seeds, t, self._nxt_dev[k])

    def step_wait(self, k: int):
        """Part ``k``'s step started by :meth:`step_async`: ``(reward, terminated, truncated, finished)`` of its
        copies (arrays of its rows; :attr:`EpisodeStat.env` and :attr:`failed` are indexes of all copies); the
        arrays' rows of the part hold its next observations."""
        jnp = self.jnp
        sl = self.parts[k]
        state, out = self._pending[k]
        self._pending[k] = None
        ended = np.asarray(out["ended"])
        bad = np.asarray(out["bad"])
        rew = {g.name: np.asarray(out[f"{g.name}/reward"]) for g in self.spec.groups}
        term = {g.name: np.asarray(out[f"{g.name}/terminated"]) for g in self.spec.groups}
        trunc = {g.name: np.asarray(out[f"{g.name}/truncated"]) for g in self.spec.groups}
        tf = self.obs_transform
        for g in self.spec.groups:
            f = np.asarray(out[f"{g.name}/final_obs"])
            self.final_obs[g.name][sl] = f if tf is None else np.where(trunc[g.name][..., None], tf(f), 0.0)
        if self.final_state is not None:
            self.final_state[sl] = np.asarray(out["final_state"])
        self.failed = []
        if bad.any():
            rew, term, trunc = self._failed_copies(k, np.flatnonzero(bad), rew, term, trunc)
        lengths = np.asarray(out["length"])
        won = np.asarray(out["won"]) if "won" in out else np.full(ended.shape, np.nan)
        ep_ret = {n: r[sl] for n, r in self._ep_ret.items()}
        for g in self.spec.groups:
            ep_ret[g.name] += rew[g.name].sum(1)
        finished = [EpisodeStat(sl.start + int(i), int(lengths[i]), {n: float(r[i]) for n, r in ep_ret.items()},
                                float(won[i])) for i in np.flatnonzero(ended & ~bad)]
        restarted = ended | bad
        m = int(restarted.sum())
        if m:
            for r in ep_ret.values():
                r[restarted] = 0.0
            self.episode_seeds[sl][restarted] = self._nxt[k][:m]
            self._resets[k] += m
            P = sl.stop - sl.start
            self._nxt[k] = np.concatenate([self._nxt[k][m:],
                                           self._seeds(k, self._resets[k] + P - m, m).astype(np.int32)])
            self._nxt_dev[k] = jnp.asarray(self._nxt[k])
        self._write(out, sl)
        self._dev[k] = (state, out["seeds"], out["t"], tuple(out[f"{g.name}/alive"] for g in self.spec.groups))
        return rew, term, trunc, finished

    def _failed_copies(self, k: int, idx: np.ndarray, rew, term, trunc):
        """NaN in part ``k``'s copies ``idx`` (its rows; they were re-started in the same call): each is an env error
        (``on_error``); its episode is discarded and ends, for learners, by truncation at its last good
        observation."""
        rows = self.parts[k].start + idx
        for i in rows:
            try:
                raise FloatingPointError("NaN in its observations or rewards")
            except FloatingPointError as e:
                self.errors = env_error(self.spec.name, int(i), "step", e, self.on_error, self.errors,
                                        self.max_errors)
        self.failed = [int(i) for i in rows]
        rew, term, trunc = ({n: a.copy() for n, a in d.items()} for d in (rew, term, trunc))
        for g in self.spec.groups:
            n = g.name
            rew[n][idx] = 0.0
            term[n][idx] = False
            trunc[n][idx] = self.alive[n][rows]
            self.final_obs[n][rows] = self.obs[n][rows]
        if self.final_state is not None:
            self.final_state[rows] = self.state[rows]
        return rew, term, trunc

    def close(self) -> None:
        self._dev = [None] * len(self.parts)
        self._pending = [None] * len(self.parts)
