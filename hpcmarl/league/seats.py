"""League actors' environments: the trained policy's seats as a vectorised env, every other seat played by a
league member (no MPI).

:class:`SeatVecEnv` has :class:`hpcmarl.envs.VecEnv`'s interface (``obs``, ``alive``, ``action_mask``,
``step``, automatic reset), so the rollout flow's :class:`hpcmarl.sampler.Sampler` fills unroll records from
it unchanged; the records hold the trained seats only. The other seats' moves happen inside ``step``: their
members act through :class:`Opponents` (batched over the env copies that face the same member).

- Turn-based (AEC) games such as ``connect_four_v3`` are stepped directly with their action masks: one
  ``step`` is one move of the trained seat followed by the other seats' moves until it is the trained seat's
  turn again (or the game ends), so the reward of a step includes what the opponents' replies caused.
- Parallel games step all agents at once.

Seats (``league.seats``): ``per_agent`` -- the trained policy takes one agent of its policy group (the seat
rotates from episode to episode; the group's other agents are played by a member of the same lineage);
``per_team`` -- in team games (``EnvEntry.teams``, e.g. ``battle_v4``'s red and blue) it takes every agent of one
team (the team rotates; the other team is played by a member of the same lineage); ``per_group`` -- it plays
every agent of its policy group. Other policy groups are played by members chosen for them. Every env copy
draws its members when its episode starts (``choose(env_index)``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

import numpy as np

from hpcmarl.envs import REGISTRY, EnvSpec, EpisodeStat, GroupSpec, build_spec, load, make_env, resolve_groups
from hpcmarl.envs import entry as env_entry
from hpcmarl.envs.vec import env_error, replace_copy
from hpcmarl.league.scripted import random_legal

SELF = -1  # member id of "the trained policy's current weights" in per-episode assignments


@dataclass
class LeagueEpisode(EpisodeStat):
    members: Dict[str, int] = field(default_factory=dict)  # policy group -> member id that played it
    seat: int = 0  # index of the trained seat set (per_agent: the agent within its policy group; per_team: the team)
    mean_return: float = 0.0  # mean per-agent return of the trained seats
    other_return: float = 0.0  # mean per-agent return of the seats the trained policy did not play
    team_return: float = 0.0  # summed over every agent (cooperative games: what the partners achieved together)
    alive: int = -1  # games that count survivors (EnvEntry.survivors): the trained side's agents left at the end
    other_alive: int = -1  # ... and the other side's

    @property
    def score(self) -> float:
        """1 win, 0.5 draw, 0 loss: the trained side's survivors against the other side's where the game counts
        survivors, else the trained seats' mean per-agent return against the others'."""
        own, other = (self.alive, self.other_alive) if self.alive >= 0 else (self.mean_return, self.other_return)
        return 1.0 if own > other else 0.0 if own < other else 0.5


SEATS = ("per_agent", "per_team", "per_group")


def teams(full: EnvSpec) -> Dict[str, List[str]]:
    """The sides of a team game (``EnvEntry.teams``): team -> its agents; empty for other games."""
    patterns = REGISTRY[full.name].teams if full.name in REGISTRY else {}
    return resolve_groups(list(full.agents), patterns, full.name) if patterns else {}


def seat_sets(full: EnvSpec, policy_group: str, seats: str) -> List[List[str]]:
    """The agent sets of ``policy_group`` the trained policy takes in turn (one per episode): each agent
    (``per_agent``), each team's agents (``per_team``) or all of them (``per_group``); all of one size."""
    base = full.group(policy_group).agents
    if seats == "per_agent":
        return [[a] for a in base]
    if seats == "per_group":
        return [list(base)]
    if seats != "per_team":
        raise ValueError(f"seats must be one of {', '.join(SEATS)}, got {seats!r}")
    sides = teams(full)
    if not sides:
        raise ValueError(f"seats=per_team needs a team game; {full.name} has no teams "
                         f"(team games: {', '.join(n for n, e in REGISTRY.items() if e.teams)})")
    sets = [t for t in ([a for a in side if a in base] for side in sides.values()) if t]
    if len(sets) < 2 or len({len(t) for t in sets}) != 1:
        raise ValueError(f"seats=per_team: policy group {policy_group!r} must hold two or more teams of one size, "
                         f"got {sets}")
    return sets


def trained_spec(full: EnvSpec, policy_group: str, name: str, seats: str) -> EnvSpec:
    """The trained policy's view of the game ``full``: one group ``name`` with ``policy_group``'s spaces and the
    first of its seat sets (:func:`seat_sets`)."""
    base = full.group(policy_group)
    agents = seat_sets(full, policy_group, seats)[0]
    return EnvSpec(full.name, [GroupSpec(name, agents, base.obs_dim, base.discrete, base.n_actions, base.act_dim,
                                         base.act_low, base.act_high, base.obs_shape)], 0)


def league_spec(cfg, gi: int) -> EnvSpec:
    """The spec group ``gi``'s learner trains on: its trained seats only (named after the league group)."""
    g = cfg.league.groups[gi]
    env = make_env(cfg.env.name, cfg.env.kwargs)
    try:
        return trained_spec(build_spec(env, cfg.env.name, cfg.policy_map), g.policy_group, g.name, cfg.league.seats)
    finally:
        env.close()


class Opponents:
    """Members' policies by id: ``act(member, group, obs [B, obs_dim], mask [B, n_actions]) -> actions [B]``."""

    def act(self, member: int, group: str, obs: np.ndarray, mask: np.ndarray) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError


def _obs_and_mask(o, g: GroupSpec):
    if isinstance(o, dict):
        mask = np.asarray(o.get("action_mask", np.ones(g.mask_dim)), bool)
        o = o["observation"]
    else:
        mask = np.ones(g.mask_dim, bool)
    return np.asarray(o, np.float32).reshape(-1), mask


class SeatVecEnv:
    """``num_envs`` copies; the trained policy (league group ``name``) plays ``policy_group``'s seats."""

    def __init__(self, env_name: str, num_envs: int, seed: int, kwargs, policy_map, policy_group: str, name: str,
                 seats: str, choose: Callable[[int], Dict[str, int]], opponents: Opponents,
                 obs_transform: Optional[Callable] = None, reward_scale: float = 1.0, on_error: str = "abort",
                 max_errors: int = 0):
        entry = env_entry(env_name, kwargs)
        self.turn_based = entry.turn_based
        self.survivors = load(entry.survivors) if entry.survivors else None

        def make():
            env = make_env(env_name, kwargs)
            if not self.turn_based:
                from pettingzoo.utils.conversions import aec_to_parallel
                from pettingzoo.utils.env import AECEnv

                env = aec_to_parallel(env) if isinstance(env, AECEnv) else env
            return env

        self._make = make
        self.envs = [make() for _ in range(num_envs)]
        # actors.env_errors, as in VecEnv: a copy that raises is re-created and its episode discarded
        self.on_error, self.max_errors, self.errors = on_error, int(max_errors), 0
        self.failed: List[int] = []
        self.full = build_spec(self.envs[0], env_name, policy_map)  # every policy group of the game
        self.spec_of = {a: g for g in self.full.groups for a in g.agents}  # agent -> its policy group's spec
        self.group_of = {a: g.name for a, g in self.spec_of.items()}
        self.spec = trained_spec(self.full, policy_group, name, seats)
        self.sets = seat_sets(self.full, policy_group, seats)  # the trained agents, by seat
        self.team_of = {a: t for t, side in teams(self.full).items() for a in side}
        g = self.spec.groups[0]
        self.name = name
        self.num_envs, self.seed = num_envs, seed
        self.choose, self.opponents = choose, opponents
        self.obs_transform, self.reward_scale = obs_transform, float(reward_scale)
        E, n = num_envs, g.n
        self.obs = {name: np.zeros((E, n, g.obs_dim), np.float32)}
        self.alive = {name: np.zeros((E, n), bool)}
        self.action_mask = {name: np.ones((E, n, g.mask_dim), bool)}
        self.state = self.final_state = None
        self.final_obs = {name: np.zeros((E, n, g.obs_dim), np.float32)}  # as VecEnv.final_obs
        self._ep_len = np.zeros(E, np.int64)
        self._ret = np.zeros(E)  # trained seats' summed reward this episode
        self._acc = np.zeros((E, n), np.float32)  # each trained seat's reward since its last step
        self._other = np.zeros(E)  # other seats' summed reward this episode
        self._episodes = np.zeros(E, np.int64)  # finished episodes per copy (seat rotation)
        self.trained: List[List[str]] = [[] for _ in range(E)]  # trained agents per copy, in spec order
        self.members: List[Dict[str, int]] = [{} for _ in range(E)]
        self._done = np.zeros(E, bool)
        self._alive = [(-1, -1)] * E  # survivors (trained side, other side) at the end of the episode

    # ---- episode start -------------------------------------------------------------------------------
    def _seat(self, i: int) -> int:
        return int((self._episodes[i] + i) % len(self.sets))

    def _start(self, i: int, seed: Optional[int]):
        env = self.envs[i]
        self.members[i] = dict(self.choose(i))
        self.trained[i] = self.sets[self._seat(i)]
        self._ret[i] = self._other[i] = 0.0
        self._ep_len[i] = 0
        self._done[i] = False
        try:
            out = env.reset(seed=seed)
        except Exception as e:
            return self._copy_failed(i, "reset", e)
        self._last_obs[i] = out[0] if not self.turn_based else None

    def _copy_failed(self, i: int, what: str, exc: Exception) -> None:
        """Copy ``i`` raised: count it (or re-raise, see :func:`hpcmarl.envs.vec.env_error`), re-create it, discard its
        episode (its trained seats' episode ends as a truncation at their last observation) and start a new one."""
        self.errors = env_error(self.full.name, i, what, exc, self.on_error, self.errors, self.max_errors)
        replace_copy(self.envs, i, self._make)
        if i not in self.failed:
            self.failed.append(i)
        self._start(i, self.seed + 7_919 * self.errors + i)

    def _member(self, i: int, agent: str) -> int:
        return self.members[i].get(self.group_of[agent], SELF)

    def reset(self, reseed: bool = True):
        self._last_obs = [None] * self.num_envs
        for i in range(self.num_envs):
            self._start(i, self.seed + i if reseed else None)
        if self.turn_based:
            self._advance(list(range(self.num_envs)))
        self._write_all()
        return self.obs

    # ---- opponents ---------------------------------------------------------------------------------
    def _batched(self, jobs):
        """``jobs``: ``(key, member, group, obs, mask)``; returns ``{key: action}`` with one forward pass per
        (member, group)."""
        by = {}
        for key, member, group, o, m in jobs:
            by.setdefault((member, group), []).append((key, o, m))
        out = {}
        for (member, group), items in by.items():
            acts = self.opponents.act(member, group, np.stack([o for _, o, _ in items]),
                                      np.stack([m for _, _, m in items]))
            for (key, _, _), a in zip(items, acts):
                out[key] = a
        return out

    def _is_done(self, i: int) -> bool:
        env = self.envs[i]
        return not env.agents or all(env.terminations.get(a, False) or env.truncations.get(a, False)
                                     for a in env.agents)

    def _add_rewards(self, i: int, rewards: Dict[str, float]):
        for a, r in rewards.items():
            if a in self.trained[i]:
                self._acc[i, self.trained[i].index(a)] += float(r) * self.reward_scale
                self._ret[i] += float(r) * self.reward_scale
            else:
                self._other[i] += float(r)

    def _advance(self, copies: List[int]):
        """AEC: play the other seats of ``copies`` until each is at a trained seat's turn or over."""
        pending = [i for i in copies if not self._done[i]]
        while pending:
            jobs = []
            for i in pending:
                env = self.envs[i]
                if self._is_done(i):
                    self._done[i] = True
                    continue
                agent = env.agent_selection
                if agent in self.trained[i]:
                    continue
                g = self.spec_of[agent]
                o, m = _obs_and_mask(env.observe(agent), g)
                jobs.append(((i, agent), self._member(i, agent), g.name, o, m))
            if not jobs:
                return
            acts = self._batched(jobs)
            pending = []
            for (i, agent), a in acts.items():
                env = self.envs[i]
                try:
                    env.step(int(a) if self.spec_of[agent].discrete else a)
                except Exception as e:
                    self._copy_failed(i, "step", e)  # a new episode: its opening moves are played below
                else:
                    self._add_rewards(i, env.rewards)
                pending.append(i)

    # ---- observations --------------------------------------------------------------------------------
    def _write_all(self):
        g = self.spec.groups[0]
        for i in range(self.num_envs):
            self.obs[g.name][i] = 0.0
            self.alive[g.name][i] = False
            self.action_mask[g.name][i] = True
            env = self.envs[i]
            for j, agent in enumerate(self.trained[i]):
                if self.turn_based:
                    if agent != env.agent_selection or self._done[i]:
                        continue
                    o, m = _obs_and_mask(env.observe(agent), g)
                else:
                    if agent not in self._last_obs[i]:
                        continue
                    o, m = _obs_and_mask(self._last_obs[i][agent], g)
                self.obs[g.name][i, j] = o if self.obs_transform is None else self.obs_transform(o)
                self.alive[g.name][i, j] = True
                self.action_mask[g.name][i, j] = m

    # ---- step --------------------------------------------------------------------------------------
    def step(self, actions: Dict[str, np.ndarray]):
        g = self.spec.groups[0]
        E = self.num_envs
        act = actions[g.name]
        term = np.zeros((E, g.n), bool)
        trunc = np.zeros((E, g.n), bool)
        self._acc[:] = 0.0
        final = self.final_obs[g.name]
        final[:] = 0.0
        self.failed = []
        last_obs, last_alive = self.obs[g.name].copy(), self.alive[g.name].copy()  # a failing copy's episode ends here
        if self.turn_based:
            for i, env in enumerate(self.envs):
                agent = env.agent_selection
                j = self.trained[i].index(agent)
                try:
                    env.step(int(act[i, j]) if g.discrete else np.clip(act[i, j], g.act_low, g.act_high))
                except Exception as e:
                    self._copy_failed(i, "step", e)
                else:
                    self._add_rewards(i, env.rewards)
            self._advance(list(range(E)))  # re-created copies too: their new episode's opening moves
        else:
            jobs, chosen = [], [dict() for _ in range(E)]
            for i, env in enumerate(self.envs):
                for agent in env.agents:
                    if agent in self.trained[i]:
                        a = act[i, self.trained[i].index(agent)]
                        chosen[i][agent] = int(a) if g.discrete else np.clip(a, g.act_low, g.act_high)
                    else:
                        og = self.spec_of[agent]
                        o, m = _obs_and_mask(self._last_obs[i][agent], og)
                        jobs.append(((i, agent), self._member(i, agent), og.name, o, m))
            for (i, agent), a in self._batched(jobs).items():
                og = self.spec_of[agent]
                chosen[i][agent] = int(a) if og.discrete else np.clip(a, og.act_low, og.act_high)
            for i, env in enumerate(self.envs):
                try:
                    obs, r, te, tr, _ = env.step(chosen[i])
                except Exception as e:
                    self._copy_failed(i, "step", e)
                    continue
                self._add_rewards(i, r)
                self._last_obs[i] = {a: o for a, o in obs.items() if not (te.get(a) or tr.get(a))}
                self._done[i] = not env.agents
                if self._done[i] and self.survivors is not None:
                    alive, own = self.survivors(env), {self.team_of[a] for a in self.trained[i]}
                    self._alive[i] = (sum(n for t, n in alive.items() if t in own),
                                      sum(n for t, n in alive.items() if t not in own))
                for j, agent in enumerate(self.trained[i]):
                    term[i, j] = te.get(agent, False)
                    trunc[i, j] = tr.get(agent, False)
                    if trunc[i, j] and not term[i, j] and agent in obs:
                        final[i, j] = self._final(_obs_and_mask(obs[agent], g)[0])
        finished: List[LeagueEpisode] = []
        restart = []
        rew = self._acc.copy()
        for i in self.failed:  # discarded: a truncation at the last observation, no reward
            rew[i] = 0.0
            term[i], trunc[i], final[i] = False, last_alive[i], last_obs[i]
        for i, env in enumerate(self.envs):
            if i in self.failed:
                continue
            self._ep_len[i] += 1
            if self.turn_based and self._done[i]:
                for j, agent in enumerate(self.trained[i]):
                    trunc[i, j] = env.truncations.get(agent, False)
                    term[i, j] = not trunc[i, j]
                    if trunc[i, j]:
                        final[i, j] = self._final(_obs_and_mask(env.observe(agent), g)[0])
            if self._done[i]:
                n_other = max(1, len(self.full.agents) - len(self.trained[i]))
                finished.append(LeagueEpisode(i, int(self._ep_len[i]), {g.name: float(self._ret[i])},
                                              members=dict(self.members[i]), seat=self._seat(i),
                                              mean_return=float(self._ret[i]) / len(self.trained[i]),
                                              other_return=float(self._other[i]) / n_other,
                                              team_return=(float(self._ret[i]) / self.reward_scale
                                                           + float(self._other[i])),
                                              alive=self._alive[i][0], other_alive=self._alive[i][1]))
                self._episodes[i] += 1
                self._start(i, None)
                restart.append(i)
        if self.turn_based and restart:
            self._advance(restart)
        self._write_all()
        return {g.name: rew}, {g.name: term}, {g.name: trunc}, finished

    def _final(self, o: np.ndarray) -> np.ndarray:
        return o if self.obs_transform is None else self.obs_transform(o)

    def episode_lengths(self) -> np.ndarray:
        return self._ep_len.copy()

    def close(self):
        for env in self.envs:
            env.close()


class SeatGames(Opponents):
    """Whole episodes of a simultaneous-move game in one env copy (league evaluations, ``hpcmarl match``):
    ``policy`` (an :class:`hpcmarl.models.Inference` of one group) plays ``policy_group``'s seats (its seat sets
    take turns from episode to episode), ``member`` of ``bank`` every other seat. In the first ``opening`` steps
    of an episode every agent takes seeded random legal actions (discrete games), so that two deterministic
    policies play varied games."""

    def __init__(self, env_name: str, kwargs, policy_map, policy_group: str, seats: str, policy, member: int,
                 bank: Opponents, seed: int, opening: int = 0, on_error: str = "abort", max_errors: int = 0):
        self.policy, self.bank, self.greedy = policy, bank, getattr(bank, "greedy", True)
        self.name = policy.spec.groups[0].name
        self.members: Dict[str, int] = {}
        self.env = SeatVecEnv(env_name, 1, seed, kwargs, policy_map, policy_group, self.name, seats,
                              lambda i: self.members, self, on_error=on_error, max_errors=max_errors)
        self.members = {g.name: member for g in self.env.full.groups}
        self.opening = opening if self.env.spec.groups[0].discrete else 0
        self.rng = np.random.default_rng(seed)
        self.env.reset()

    def act(self, member: int, group: str, obs: np.ndarray, mask: np.ndarray) -> np.ndarray:
        if self.env._ep_len[0] < self.opening:
            return random_legal(self.rng, mask)
        return self.bank.act(member, group, obs, mask)

    def play(self, seed: int) -> LeagueEpisode:
        """One episode (the env continues where the last one ended); ``seed`` draws its opening."""
        self.rng = np.random.default_rng(seed)
        finished: List[LeagueEpisode] = []
        while not finished:
            if self.env._ep_len[0] < self.opening:
                actions = {self.name: random_legal(self.rng, self.env.action_mask[self.name][0])[None]}
            else:
                actions, _ = self.policy.act(self.env.obs, self.env.action_mask, greedy=self.greedy)
            finished = self.env.step(actions)[3]
        return finished[0]

    def close(self):
        self.env.close()
