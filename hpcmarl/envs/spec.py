"""Environment specs: groups, spaces and the global state of an environment, probed once (no MPI)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

import numpy as np

from hpcmarl.envs.registry import EnvError, entry, make_env, resolve_groups


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


def action_descr(space, discrete, box, name: str, agent: str) -> tuple:
    """``("discrete", n)`` or ``("box", shape, low, high)`` (bounds as flat tuples) of an agent's action space;
    ``discrete`` and ``box``: the space classes of the env's library (gymnasium, JaxMARL)."""
    if isinstance(space, discrete):
        return ("discrete", int(space.n))
    if isinstance(space, box):
        shape = tuple(int(x) for x in space.shape)
        return ("box", shape, tuple(np.broadcast_to(np.asarray(space.low), shape).ravel()),
                tuple(np.broadcast_to(np.asarray(space.high), shape).ravel()))
    raise EnvError(f"{name}: agent {agent} has unsupported action space {space}")


def group_specs(name: str, agents: List[str], policy_map, describe) -> List[GroupSpec]:
    """The groups of env ``name`` (``policy_map`` over ``agents``, :func:`resolve_groups`), each from its members'
    ``describe(agent) -> (obs shape, action)`` descriptions, which must all be equal; an action is
    ``("discrete", n)`` or ``("box", shape, low, high)`` (bounds as flat tuples, :func:`action_descr`)."""
    return [_group_spec(name, g, members, {describe(a) for a in members})
            for g, members in resolve_groups(agents, policy_map, name).items()]


def _group_spec(name: str, g: str, members: List[str], descr: set) -> GroupSpec:
    if len(descr) != 1:
        raise EnvError(f"policy_map group {g!r} of {name} mixes observation/action spaces: "
                       f"{sorted(map(str, descr))}; split it into groups with equal spaces")
    (shape, act), = descr
    obs_dim = int(np.prod(shape))
    if act[0] == "discrete":
        return GroupSpec(g, members, obs_dim, True, n_actions=act[1], obs_shape=shape)
    return GroupSpec(g, members, obs_dim, False, act_dim=int(np.prod(act[1])),
                     act_low=np.asarray(act[2], np.float32), act_high=np.asarray(act[3], np.float32), obs_shape=shape)


def build_spec(env, name: str, policy_map=None, with_state: bool = False) -> EnvSpec:
    """Groups and spaces of ``env``; ``state_dim`` stays 0 unless ``with_state`` (a centralized critic
    on the env's global state) and the env has one."""
    from gymnasium import spaces

    def describe(a):
        ospace, _ = _obs_space(env.observation_space(a))
        return tuple(int(x) for x in ospace.shape), action_descr(env.action_space(a), spaces.Discrete, spaces.Box,
                                                                  name, a)

    out = group_specs(name, list(env.possible_agents), policy_map, describe)
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
        act = (f"Discrete({g.n_actions})" if g.discrete
               else f"Box({g.act_dim}) in [{g.act_low.min():g}, {g.act_high.max():g}]")
        obs = f"obs {g.obs_shape}" + (" (image)" if len(g.obs_shape) == 3 else "")
        lines.append(f"group {g.name}: {g.n} agent(s) {g.agents}, {obs}, actions {act}"
                     + (", action masks in observations" if masked[g.name] else ""))
    return lines
