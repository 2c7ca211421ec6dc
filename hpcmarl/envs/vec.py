"""PettingZoo environments as fixed-shape arrays (no MPI).

:class:`VecEnv` steps ``E`` copies of a PettingZoo *parallel* environment (AEC environments go
through PettingZoo's ``aec_to_parallel`` conversion) and turns the per-agent dicts into per-group
arrays in a fixed agent order:

    obs[g]      float32 [E, n_g, obs_dim_g]   (zeros for agents that are done or absent)
    alive[g]    bool    [E, n_g]              (the agent acts this step)
    reward[g], terminated[g], truncated[g]    [E, n_g]
    action_mask[g] bool [E, n_g, n_actions_g] (all True where the env has no masks)
    final_obs[g] float32 [E, n_g, obs_dim_g]  (the last step's final observations of truncated agents)

Groups come from the policy map (agents sharing one policy); observation and action spaces may
differ between groups but must agree inside a group. Finished environment copies are reset
automatically; their finished episodes are returned as :class:`EpisodeStat` rows.
"""
from __future__ import annotations

import sys
from typing import Callable, Dict, List, Optional

import numpy as np

from hpcmarl.envs.batched import BatchedEnv, EpisodeStat, episode_seed
from hpcmarl.envs.registry import make_parallel_env
from hpcmarl.envs.spec import build_spec


# --------------------------------------------------------------------------------------------------
# vectorised wrapper
# --------------------------------------------------------------------------------------------------
def env_error(name: str, i: int, what: str, exc: Exception, on_error: str, errors: int, max_errors: int) -> int:
    """``actors.env_errors`` for env copy ``i`` of one actor that raised in ``what``: "abort" re-raises; "reset" logs
    (the first error with its traceback, later ones one line each) and returns the new error count, unless that
    passes ``max_errors``. The caller then re-creates the copy (:func:`replace_copy`) and discards its episode."""
    if on_error != "reset":
        raise exc
    errors += 1
    where = f"{name}: env copy {i} raised in {what}() ({type(exc).__name__}: {exc})"
    if errors > max_errors:
        raise RuntimeError(f"{where}; that is {errors} env errors, "
                           f"more than actors.max_env_errors={max_errors}") from exc
    if errors == 1:
        import traceback

        print(f"[hpcmarl] {where}; the copy is re-created and its episode discarded "
              f"(actors.env_errors=reset):\n{traceback.format_exc()}", file=sys.stderr, flush=True)
    else:
        print(f"[hpcmarl] {where}; re-created ({errors} env errors so far)", file=sys.stderr, flush=True)
    return errors


def replace_copy(envs: list, i: int, make: Callable) -> None:
    try:
        envs[i].close()
    except Exception:
        pass
    envs[i] = make()


class VecEnv(BatchedEnv):
    """``num_envs`` PettingZoo copies stepped one by one in Python: the per-copy :class:`BatchedEnv`."""

    def __init__(self, name: str, num_envs: int, seed: int, kwargs=None, policy_map=None,
                 obs_transform: Optional[Callable] = None, with_state: bool = False, render_mode: Optional[str] = None,
                 reward_scale: float = 1.0, on_error: str = "abort", max_errors: int = 0):
        super().__init__()
        self._make = lambda: make_parallel_env(name, kwargs, render_mode)
        self.envs = [self._make() for _ in range(num_envs)]
        # on_error "reset": an exception from one copy's step()/reset() re-creates that copy and discards its
        # episode (counted in self.errors; more than max_errors ends the run), "abort": it propagates
        self.on_error, self.max_errors, self.errors = on_error, int(max_errors), 0
        self.spec = build_spec(self.envs[0], name, policy_map, with_state)
        self.num_envs = num_envs
        self.seed = seed
        # every episode starts from an explicit seed: the resets-th of the stream of ``seed`` (see episode_seed);
        # the counter and each copy's current seed make the env side of a resume exact (:meth:`seeds_state`)
        self.resets = 0
        self.episode_seeds = np.zeros(num_envs, np.int64)
        self.obs_transform = obs_transform
        self.reward_scale = float(reward_scale)  # per-actor environment variants (heterogeneous objectives)
        E = num_envs
        self._slot = {a: (gi, j) for gi, g in enumerate(self.spec.groups) for j, a in enumerate(g.agents)}
        self.obs = {g.name: np.zeros((E, g.n, g.obs_dim), np.float32) for g in self.spec.groups}
        self.alive = {g.name: np.zeros((E, g.n), bool) for g in self.spec.groups}
        self.action_mask = {g.name: np.ones((E, g.n, g.mask_dim), bool) for g in self.spec.groups}
        self.state = np.zeros((E, self.spec.state_dim), np.float32) if self.spec.state_dim else None
        # the last step's final observations of agents whose episode it truncated (zeros elsewhere): a learner
        # bootstraps from them, since self.obs already holds the next episode's first observation
        self.final_obs = {g.name: np.zeros((E, g.n, g.obs_dim), np.float32) for g in self.spec.groups}
        self.final_state = np.zeros((E, self.spec.state_dim), np.float32) if self.spec.state_dim else None
        self._ep_ret = {g.name: np.zeros(E, np.float64) for g in self.spec.groups}
        self._ep_len = np.zeros(E, np.int64)
        self._has_mask = [False] * E
        self._had_final = False

    # ---- helpers -------------------------------------------------------------------------------
    def _write_obs(self, i: int, obs: dict, infos: Optional[dict]):
        for g in self.spec.groups:
            self.obs[g.name][i] = 0.0
            self.alive[g.name][i] = False
            self.action_mask[g.name][i] = True
        for agent, o in obs.items():
            gi, j = self._slot[agent]
            g = self.spec.groups[gi]
            if isinstance(o, dict):
                if "action_mask" in o:
                    self.action_mask[g.name][i, j] = np.asarray(o["action_mask"], bool)
                o = o["observation"]
            elif infos and isinstance(infos.get(agent), dict) and "action_mask" in infos[agent]:
                self.action_mask[g.name][i, j] = np.asarray(infos[agent]["action_mask"], bool)
            self.obs[g.name][i, j] = self._transform(np.asarray(o, np.float32).reshape(-1))
            self.alive[g.name][i, j] = True
        if self.state is not None:
            self.state[i] = np.asarray(self.envs[i].state(), np.float32).reshape(-1)

    def _transform(self, o: np.ndarray) -> np.ndarray:
        return o if self.obs_transform is None else self.obs_transform(o)

    def _write_final(self, i: int, obs: dict, truncated: dict, terminated: dict) -> bool:
        """Keep the final observations of copy ``i``'s agents that the step truncated (not terminated)."""
        any_final = False
        for agent, o in obs.items():
            if truncated.get(agent, False) and not terminated.get(agent, False):
                gi, j = self._slot[agent]
                o = o["observation"] if isinstance(o, dict) else o
                self.final_obs[self.spec.groups[gi].name][i, j] = self._transform(np.asarray(o, np.float32).reshape(-1))
                any_final = True
        if any_final and self.final_state is not None:
            self.final_state[i] = np.asarray(self.envs[i].state(), np.float32).reshape(-1)
        return any_final

    def _env_error(self, i: int, what: str, exc: Exception) -> None:
        """Copy ``i`` raised in ``what``: with on_error "reset" log it, re-create the copy and go on (within the
        limit)."""
        self.errors = env_error(self.spec.name, i, what, exc, self.on_error, self.errors, self.max_errors)
        replace_copy(self.envs, i, self._make)
        self.failed.append(i)
        self._reset_one(i)

    def _reset_one(self, i: int, seed: Optional[int] = None):
        """Start a new episode in copy ``i`` with ``seed`` (default: the next seed of the stream)."""
        if seed is None:
            seed = episode_seed(self.seed, self.resets)
            self.resets += 1
        self.episode_seeds[i] = seed
        try:
            obs, infos = self.envs[i].reset(seed=seed)
        except Exception as e:
            return self._env_error(i, "reset", e)
        self._write_obs(i, obs, infos)
        for g in self.spec.groups:
            self._ep_ret[g.name][i] = 0.0
        self._ep_len[i] = 0

    def reset(self, reseed: bool = True):
        """Reset every copy with the next seeds of the stream of ``self.seed`` (from its start with ``reseed``, so
        the same seed gives the same episodes); returns the observation dict."""
        if reseed:
            self.resets = 0
        for i in range(self.num_envs):
            self._reset_one(i)
        return self.obs

    def restore_seeds(self, state: np.ndarray) -> None:
        """Restart every copy's current episode from its seed in ``state`` (:meth:`seeds_state`) and continue the
        stream from its counter: where the episodes had just started (an unroll ended with every episode, as with
        ``unroll_length`` a multiple of a fixed episode length) the envs are then exactly where they were."""
        state = np.asarray(state, np.int64)
        for i in range(self.num_envs):
            self._reset_one(i, int(state[i]))
        self.seed, self.resets = int(state[-2]), int(state[-1])

    def step(self, actions: Dict[str, np.ndarray]):
        """Step every copy with per-group action arrays ``[E, n_g(, act_dim)]``.

        Returns ``(reward, terminated, truncated, episodes)``; ``self.obs``/``self.alive`` then hold
        the next observations (the reset observations for copies whose episode ended).
        """
        E = self.num_envs
        rew = {g.name: np.zeros((E, g.n), np.float32) for g in self.spec.groups}
        term = {g.name: np.zeros((E, g.n), bool) for g in self.spec.groups}
        trunc = {g.name: np.zeros((E, g.n), bool) for g in self.spec.groups}
        finished: List[EpisodeStat] = []
        if self._had_final:
            for g in self.spec.groups:
                self.final_obs[g.name][:] = 0.0
            if self.final_state is not None:
                self.final_state[:] = 0.0
        self._had_final = False
        self.failed = []
        for i, env in enumerate(self.envs):
            act = {}
            for agent in env.agents:
                gi, j = self._slot[agent]
                g = self.spec.groups[gi]
                a = actions[g.name][i, j]
                if g.discrete:
                    act[agent] = int(a)
                else:
                    act[agent] = np.clip(np.asarray(a, np.float32), g.act_low, g.act_high)
            try:
                obs, r, te, tr, infos = env.step(act)
            except Exception as e:
                # the episode is discarded; for learners it ends by truncation at the last observation
                for g in self.spec.groups:
                    self.final_obs[g.name][i] = self.obs[g.name][i]
                    trunc[g.name][i] = self.alive[g.name][i]
                if self.final_state is not None:
                    self.final_state[i] = self.state[i]
                self._had_final = True
                self._env_error(i, "step", e)
                continue
            for agent, val in r.items():
                gi, j = self._slot[agent]
                name = self.spec.groups[gi].name
                rew[name][i, j] = val * self.reward_scale
                term[name][i, j] = te.get(agent, False)
                trunc[name][i, j] = tr.get(agent, False)
            for g in self.spec.groups:
                self._ep_ret[g.name][i] += float(rew[g.name][i].sum())
            self._ep_len[i] += 1
            if any(tr.values()):
                self._had_final |= self._write_final(i, obs, tr, te)
            if env.agents:
                live = {a: o for a, o in obs.items() if not (te.get(a, False) or tr.get(a, False))}
                self._write_obs(i, live, infos)
            else:
                finished.append(EpisodeStat(i, int(self._ep_len[i]), {g: float(v[i]) for g, v in self._ep_ret.items()}))
                self._reset_one(i)
        return rew, term, trunc, finished

    def episode_lengths(self) -> np.ndarray:
        return self._ep_len.copy()

    def close(self):
        for env in self.envs:
            env.close()
