"""PettingZoo environments as fixed-shape arrays.

:class:`VecEnv` steps ``E`` copies of a PettingZoo *parallel* environment (AEC environments go
through PettingZoo's ``aec_to_parallel`` conversion) and turns the per-agent dicts into per-group
arrays in a fixed agent order:

    obs[g]      float32 [E, n_g, obs_dim_g]   (zeros for agents that are done or absent)
    alive[g]    bool    [E, n_g]              (the agent acts this step)
    reward[g], terminated[g], truncated[g]    [E, n_g]
    action_mask[g] bool [E, n_g, n_actions_g] (all True where the env has no masks)

Groups come from the policy map (agents sharing one policy); observation and action spaces may
differ between groups but must agree inside a group. Finished environment copies are reset
automatically; their finished episodes are returned as :class:`EpisodeStat` rows.
This module never imports MPI.
"""
from __future__ import annotations

import fnmatch
import functools
import importlib
import json
import sys
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

import numpy as np


# --------------------------------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EnvEntry:
    factory: str  # "module:callable" returning a PettingZoo parallel or AEC env
    groups: Dict[str, List[str]]  # default policy map
    kwargs: Dict = field(default_factory=dict)  # default constructor arguments
    description: str = ""
    turn_based: bool = False  # an AEC game whose agents move one at a time (league mode steps it directly)
    cooperative: bool = True  # all agents work towards one goal (league mode: partners, not opponents)
    teams: Dict[str, List[str]] = field(default_factory=dict)  # sides of a team game (agent names or patterns)
    install: str = ""  # how to get the package the factory imports, when it is not a dependency of hpcmarl
    survivors: str = ""  # "module:callable(env) -> {team: agents alive}": the team with more left wins (league)


REGISTRY: Dict[str, EnvEntry] = {
    "simple_spread_v3": EnvEntry("mpe2.simple_spread_v3:parallel_env", {"agent": ["agent_*"]},
                                 {"N": 3, "max_cycles": 25}, "MPE cooperative navigation (default)"),
    "simple_reference_v3": EnvEntry("mpe2.simple_reference_v3:parallel_env", {"agent": ["agent_*"]},
                                    {"max_cycles": 25}, "MPE two-agent communication + navigation"),
    "simple_tag_v3": EnvEntry("mpe2.simple_tag_v3:parallel_env",
                              {"adversary": ["adversary_*"], "agent": ["agent_*"]},
                              {"max_cycles": 25}, "MPE predator-prey: adversaries vs. good agent", cooperative=False),
    "connect_four_v3": EnvEntry("pettingzoo.classic.connect_four_v3:env", {"player": ["player_*"]}, {},
                                "PettingZoo classic Connect Four: turn-based, action masks (league mode)", True, False),
    "battle_v4": EnvEntry("magent2.environments.battle_v4:parallel_env", {"soldier": ["red_*", "blue_*"]},
                          {"map_size": 16, "max_cycles": 200},
                          "MAgent2 battle, small map: two teams of 6 on a 16x16 grid, 13x13x5 views (league mode)",
                          cooperative=False, teams={"red": ["red_*"], "blue": ["blue_*"]},
                          install="pip install --no-deps magent2==0.3.4 (tools/bootstrap.sh does)",
                          survivors="hpcmarl.envs:magent_survivors"),
    "lbf": EnvEntry("hpcmarl.adapters:lbf", {"agent": ["agent_*"]}, {"task": "Foraging-8x8-2p-2f-coop-v3", "max_cycles": 50},
                    "Level-Based Foraging (EPyMARL benchmark), time limit 50; env.kwargs.task picks the map",
                    install="pip install lbforaging==2.0.0"),
    "rware": EnvEntry("hpcmarl.adapters:rware", {"agent": ["agent_*"]}, {"task": "rware-tiny-2ag-v2", "max_cycles": 500},
                      "Multi-Robot Warehouse (EPyMARL benchmark), time limit 500; env.kwargs.task picks the layout",
                      install="pip install rware==2.0.0"),
    "pursuit_v5": EnvEntry("pettingzoo.sisl.pursuit_v5:parallel_env", {"pursuer": ["pursuer_*"]},
                           {"max_cycles": 500}, "SISL pursuit: 8 pursuers, 7x7x3 local views"),
    "counting_v0": EnvEntry("hpcmarl.testing:counting_env", {"agent": ["agent_*"]},
                            {}, "test fake: observation is the step index"),
    "matrix_v0": EnvEntry("hpcmarl.testing:matrix_env", {"agent": ["agent_*"]}, {"max_cycles": 3},
                          "test task: repeated cooperative 3x3 matrix game (optional action masks)"),
    "target_v0": EnvEntry("hpcmarl.testing:target_env", {"agent": ["agent_*"]},
                          {}, "test task: one continuous step, reward -(a - target)^2"),
}


class EnvError(ValueError):
    pass


def magent_survivors(env) -> Dict[str, int]:
    """Agents alive per team of a MAgent2 game (its handles in team order: battle_v4's red, blue). MAgent2 ends
    the game when a team is wiped out and then reports every agent terminated, so the engine is asked."""
    raw = env.unwrapped
    names = list(dict.fromkeys(a.rsplit("_", 1)[0] for a in raw.possible_agents))
    return {n: int(raw.env.get_num(h)) for n, h in zip(names, raw.handles)}


def load(path: str) -> Callable:
    """``"module:attribute"`` -> the attribute."""
    mod, _, name = path.partition(":")
    return getattr(importlib.import_module(mod), name)


def is_path(name: str) -> bool:
    """``env.name`` names a user environment as ``"module:callable"`` rather than a registry entry."""
    return name not in REGISTRY and ":" in name


def prefix_groups(agents: List[str]) -> Dict[str, List[str]]:
    """Default policy map of an unregistered env: agents grouped by name prefix (``adversary_0, agent_0, agent_1``
    -> ``adversary: [adversary_0]``, ``agent: [agent_0, agent_1]``); a name without a ``_<number>`` suffix is its own
    group."""
    groups: Dict[str, List[str]] = {}
    for a in agents:
        stem, _, num = a.rpartition("_")
        groups.setdefault(stem if stem and num.isdigit() else a, []).append(a)
    return groups


def _load_factory(name: str, entry: Optional[EnvEntry]) -> Callable:
    if entry is not None:
        try:
            return load(entry.factory)
        except ModuleNotFoundError as e:
            raise EnvError(f"{name} needs the Python package {e.name!r}: {entry.install or 'pip install ' + str(e.name)}") from None
    mod, _, attr = name.partition(":")
    if not mod or not attr:
        raise EnvError(f"env.name {name!r}: expected a registered name or 'module:callable'")
    from hpcmarl.algos.base import import_user_module

    try:
        module = import_user_module(mod)
    except Exception as e:
        raise EnvError(f"env.name {name!r}: cannot import {mod!r} ({type(e).__name__}: {e})") from None
    factory = module
    for part in attr.split("."):
        factory = getattr(factory, part, None)
    if not callable(factory):
        raise EnvError(f"env.name {name!r}: module {mod!r} has no callable {attr!r}")
    return factory


def make_env(name: str, kwargs: Optional[dict] = None, render_mode: Optional[str] = None):
    """Construct one PettingZoo environment (AEC or parallel, as the library returns it) by registry name or by
    ``"module:callable"`` path."""
    entry = REGISTRY.get(name)
    if entry is None and ":" not in name:
        raise EnvError(f"unknown environment {name!r} (known: {', '.join(sorted(REGISTRY))}; or 'module:callable' "
                       f"returning a PettingZoo env)")
    kw = {**(entry.kwargs if entry else {}), **(kwargs or {})}
    if render_mode is not None:
        kw["render_mode"] = render_mode
    factory = _load_factory(name, entry)
    try:
        env = factory(**kw)
    except TypeError as e:
        raise EnvError(f"env.kwargs for {name}: {e}") from None
    except Exception as e:
        if entry is not None:
            raise
        raise EnvError(f"env.name {name!r}: calling it raised {type(e).__name__}: {e}") from None
    if entry is None:
        from pettingzoo.utils.env import AECEnv, ParallelEnv

        if not isinstance(env, (AECEnv, ParallelEnv)):
            raise EnvError(f"env.name {name!r} returned {type(env).__name__}, not a PettingZoo AEC or parallel env")
    return env


@functools.lru_cache(maxsize=None)
def _path_entry(name: str, kwargs_key: str) -> EnvEntry:
    from pettingzoo.utils.env import AECEnv

    env = make_env(name, json.loads(kwargs_key))
    try:
        agents = list(env.possible_agents)
        turn_based = isinstance(env, AECEnv) and not env.metadata.get("is_parallelizable", False)
    finally:
        env.close()
    if not agents:
        raise EnvError(f"env.name {name!r}: the env has no possible_agents")
    groups = prefix_groups(agents)
    # one default group = all agents work towards one goal; several groups (adversaries, predators/prey) = not
    return EnvEntry(name, {g: list(a) for g, a in groups.items()}, {}, f"user environment {name}",
                    turn_based=turn_based, cooperative=len(groups) == 1)


def entry(name: str, kwargs: Optional[dict] = None) -> EnvEntry:
    """The registry entry of ``name``; for a ``"module:callable"`` path one made by constructing the env once
    (default groups by agent-name prefix, turn-based when it is an AEC env that is not parallelizable, cooperative
    when it has one group). Raises :class:`EnvError` with a one-line message naming the path."""
    if name in REGISTRY:
        return REGISTRY[name]
    if ":" not in name:
        make_env(name)  # raises the "unknown environment" error
    return _path_entry(name, json.dumps(kwargs or {}, sort_keys=True, default=str))


def make_parallel_env(name: str, kwargs: Optional[dict] = None, render_mode: Optional[str] = None):
    """Construct one PettingZoo parallel environment by registry name."""
    if entry(name, kwargs).turn_based:
        raise EnvError(f"{name} is a turn-based game: train it in league mode (league.enabled: true), whose "
                       f"actors step it as an AEC environment")
    env = make_env(name, kwargs, render_mode)
    from pettingzoo.utils.env import AECEnv

    if isinstance(env, AECEnv):
        from pettingzoo.utils.conversions import aec_to_parallel

        env = aec_to_parallel(env)  # raises for AEC games that are not valid as parallel ones
    return env


def resolve_groups(agents: List[str], policy_map: Optional[Dict[str, List[str]]], env_name: str) -> Dict[str, List[str]]:
    """Assign every agent to exactly one group: exact names first, then fnmatch patterns, in map order."""
    if policy_map is not None:
        pmap = policy_map
    else:
        pmap = REGISTRY[env_name].groups if env_name in REGISTRY else prefix_groups(agents)
    groups: Dict[str, List[str]] = {g: [] for g in pmap}
    for agent in agents:
        owner = next((g for g, pats in pmap.items() if agent in pats), None)
        if owner is None:
            owner = next((g for g, pats in pmap.items() if any(fnmatch.fnmatchcase(agent, p) for p in pats)), None)
        if owner is None:
            raise EnvError(f"policy_map: agent {agent!r} of {env_name} matches no group "
                           f"(groups: {dict(pmap)}; agents: {agents})")
        groups[owner].append(agent)
    empty = [g for g, a in groups.items() if not a]
    if empty:
        raise EnvError(f"policy_map: group(s) {empty} match no agent of {env_name} (agents: {agents})")
    return groups


# --------------------------------------------------------------------------------------------------
# spec
# --------------------------------------------------------------------------------------------------
@dataclass
class GroupSpec:
    name: str
    agents: List[str]
    obs_dim: int
    discrete: bool
    n_actions: int = 0  # discrete
    act_dim: int = 0  # continuous
    act_low: Optional[np.ndarray] = None
    act_high: Optional[np.ndarray] = None
    obs_shape: tuple = ()  # the observation's shape before flattening (e.g. (6, 7, 2) for a board)

    @property
    def n(self) -> int:
        return len(self.agents)

    @property
    def action_shape(self):
        return () if self.discrete else (self.act_dim,)

    @property
    def mask_dim(self) -> int:
        return self.n_actions if self.discrete else 1


@dataclass
class EnvSpec:
    name: str
    groups: List[GroupSpec]
    state_dim: int  # 0 when the env has no global state()

    @property
    def agents(self) -> List[str]:
        return [a for g in self.groups for a in g.agents]

    def group(self, name: str) -> GroupSpec:
        return next(g for g in self.groups if g.name == name)

    @property
    def joint_obs_dim(self) -> int:
        return sum(g.n * g.obs_dim for g in self.groups)


def _obs_space(space):
    """(flat observation space, has action mask)."""
    from gymnasium import spaces

    if isinstance(space, spaces.Dict) and "observation" in space.spaces:
        return space.spaces["observation"], "action_mask" in space.spaces
    return space, False


def build_spec(env, name: str, policy_map=None, with_state: bool = False) -> EnvSpec:
    """Groups and spaces of ``env``; ``state_dim`` stays 0 unless ``with_state`` (a centralized critic
    on the env's global state) and the env has one."""
    from gymnasium import spaces

    agents = list(env.possible_agents)
    groups = resolve_groups(agents, policy_map, name)
    out = []
    for g, members in groups.items():
        descr = set()
        for a in members:
            ospace, _ = _obs_space(env.observation_space(a))
            aspace = env.action_space(a)
            if isinstance(aspace, spaces.Discrete):
                act = ("discrete", int(aspace.n))
            elif isinstance(aspace, spaces.Box):
                act = ("box", tuple(aspace.shape), tuple(np.asarray(aspace.low).ravel()), tuple(np.asarray(aspace.high).ravel()))
            else:
                raise EnvError(f"{name}: agent {a} has unsupported action space {aspace}")
            descr.add((tuple(int(x) for x in ospace.shape), act))
        if len(descr) != 1:
            raise EnvError(f"policy_map group {g!r} of {name} mixes observation/action spaces: {sorted(map(str, descr))}; "
                           f"split it into groups with equal spaces")
        (shape, act), = descr
        obs_dim = int(np.prod(shape))
        if act[0] == "discrete":
            out.append(GroupSpec(g, members, obs_dim, True, n_actions=act[1], obs_shape=shape))
        else:
            out.append(GroupSpec(g, members, obs_dim, False, act_dim=int(np.prod(act[1])),
                                 act_low=np.asarray(act[2], np.float32), act_high=np.asarray(act[3], np.float32),
                                 obs_shape=shape))
    state_dim = 0
    if with_state:
        try:
            state_dim = int(np.prod(env.state_space.shape))
        except Exception:
            raise EnvError(f"{name} has no global state(); use algo.critic_input=obs") from None
    return EnvSpec(name, out, state_dim)


def probe_spec(name: str, kwargs=None, policy_map=None, with_state: bool = False) -> EnvSpec:
    env = make_env(name, kwargs)
    try:
        return build_spec(env, name, policy_map, with_state)
    finally:
        env.close()


def describe_env(name: str, kwargs=None, policy_map=None) -> List[str]:
    """What hpcmarl found in an env (``hpcmarl validate --probe-env``): its kind, groups, spaces, masks, state."""
    e = entry(name, kwargs)
    env = make_env(name, kwargs)
    try:
        spec = build_spec(env, name, policy_map)
        masked = {g.name: _obs_space(env.observation_space(g.agents[0]))[1] for g in spec.groups}
        try:
            state = f"state() of shape {tuple(env.state_space.shape)}"
        except Exception:
            state = "no state() (critic_input=obs only)"
    finally:
        env.close()
    kind = "turn-based AEC (league mode)" if e.turn_based else "parallel" if not hasattr(env, "agent_selection") \
        else "AEC, stepped in parallel"
    lines = [f"{name}: {kind}, {'cooperative' if e.cooperative else 'competitive'}, {state}"]
    for g in spec.groups:
        act = f"Discrete({g.n_actions})" if g.discrete else f"Box({g.act_dim}) in [{g.act_low.min():g}, {g.act_high.max():g}]"
        obs = f"obs {g.obs_shape}" + (" (image)" if len(g.obs_shape) == 3 else "")
        lines.append(f"group {g.name}: {g.n} agent(s) {g.agents}, {obs}, actions {act}"
                     + (", action masks in observations" if masked[g.name] else ""))
    return lines


# --------------------------------------------------------------------------------------------------
# vectorised wrapper
# --------------------------------------------------------------------------------------------------
@dataclass
class EpisodeStat:
    env: int
    length: int
    returns: Dict[str, float]  # per group: summed over the group's agents


class VecEnv:
    """``num_envs`` copies of one environment with array in/out and automatic reset."""

    def __init__(self, name: str, num_envs: int, seed: int, kwargs=None, policy_map=None,
                 obs_transform: Optional[Callable] = None, with_state: bool = False, render_mode: Optional[str] = None,
                 reward_scale: float = 1.0, on_error: str = "abort", max_errors: int = 0):
        self._make = lambda: make_parallel_env(name, kwargs, render_mode)
        self.envs = [self._make() for _ in range(num_envs)]
        # on_error "reset": an exception from one copy's step()/reset() re-creates that copy and discards its
        # episode (counted in self.errors; more than max_errors ends the run), "abort": it propagates
        self.on_error, self.max_errors, self.errors = on_error, int(max_errors), 0
        self.failed: List[int] = []  # the copies that raised during the last step (their episodes were discarded)
        self.spec = build_spec(self.envs[0], name, policy_map, with_state)
        self.num_envs = num_envs
        self.seed = seed
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
        """Copy ``i`` raised in ``what``: with on_error "reset" log it, re-create the copy and go on (within the limit)."""
        if self.on_error != "reset":
            raise exc
        self.errors += 1
        where = f"{self.spec.name}: env copy {i} raised in {what}() ({type(exc).__name__}: {exc})"
        if self.errors > self.max_errors:
            raise RuntimeError(f"{where}; that is {self.errors} env errors, more than actors.max_env_errors="
                               f"{self.max_errors}") from exc
        if self.errors == 1:  # the first one with its traceback; later ones one line each
            import traceback

            print(f"[hpcmarl] {where}; the copy is re-created and its episode discarded "
                  f"(actors.env_errors=reset):\n{traceback.format_exc()}", file=sys.stderr, flush=True)
        else:
            print(f"[hpcmarl] {where}; re-created ({self.errors} env errors so far)", file=sys.stderr, flush=True)
        try:
            self.envs[i].close()
        except Exception:
            pass
        self.envs[i] = self._make()
        self.failed.append(i)
        self._reset_one(i, self.seed + 7_919 * self.errors + i)

    def _reset_one(self, i: int, seed: Optional[int]):
        try:
            obs, infos = self.envs[i].reset(seed=seed)
        except Exception as e:
            return self._env_error(i, "reset", e)
        self._write_obs(i, obs, infos)
        for g in self.spec.groups:
            self._ep_ret[g.name][i] = 0.0
        self._ep_len[i] = 0

    def reset(self, reseed: bool = True):
        """Reset every copy (copy ``i`` is seeded with ``seed + i``, unless ``reseed`` is False: then
        every copy continues its own random stream); returns the observation dict."""
        for i in range(self.num_envs):
            self._reset_one(i, self.seed + i if reseed else None)
        return self.obs

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
                self._reset_one(i, None)
        return rew, term, trunc, finished

    def close(self):
        for env in self.envs:
            env.close()
