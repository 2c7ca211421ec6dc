"""Every command's way to an environment (no MPI): PettingZoo envs (:class:`~hpcmarl.envs.vec.VecEnv`) and batched
simulators named by a reserved prefix (:data:`~hpcmarl.envs.registry.BATCHED`: ``jaxmarl:<env id>``,
``vmas:<scenario>``), whose adapter modules are imported here, on first use, by name.

``hpcmarl.envs`` exports this module's :func:`entry`, :func:`probe_spec` and :func:`describe_env`: the PettingZoo-only
ones of :mod:`.registry` and :mod:`.spec` answer for every other name. A batched env counts as registered: nothing
the person must name for import (:mod:`hpcmarl.trust`), its adapter is hpcmarl's own code; a missing simulator
package is a one-line error naming the extra that installs it.
"""
from __future__ import annotations

import functools
import importlib
import json
from typing import Callable, List, Optional

import numpy as np

from hpcmarl.envs.batched import BatchedEnv
from hpcmarl.envs.registry import BATCHED, BATCHED_EXTRAS, EnvEntry, EnvError, batched_prefix
from hpcmarl.envs.registry import entry as registry_entry
from hpcmarl.envs.spec import EnvSpec
from hpcmarl.envs.spec import describe_env as describe_pettingzoo
from hpcmarl.envs.spec import probe_spec as probe_pettingzoo
from hpcmarl.envs.vec import VecEnv


def is_batched(name: str) -> bool:
    """``name`` is a batched simulator's env (``jaxmarl:...``, ``vmas:...``)."""
    return batched_prefix(name) is not None


def adapter(name: str):
    """``(adapter module, adapter class, task)`` of a batched env name."""
    prefix = batched_prefix(name)
    task = name.partition(":")[2]
    if not task:
        raise EnvError(f"env.name {name!r}: expected {prefix}:<environment>")
    path, _, cls = BATCHED[prefix].partition(":")
    try:
        module = importlib.import_module(path)
    except ModuleNotFoundError as e:
        if e.name == path:
            raise EnvError(f"env.name {name!r}: this hpcmarl has no {prefix} adapter ({path})") from None
        extra = BATCHED_EXTRAS[prefix]
        raise EnvError(f"env.name {name!r} needs the Python package {e.name!r}: pip install -e \".[{extra}]\" "
                       f"(or make setup EXTRAS={extra})") from None
    return module, getattr(module, cls), task


def make_batched_env(name: str, num_envs: int, seed: int, kwargs: Optional[dict] = None, policy_map=None,
                     with_state: bool = False, obs_transform: Optional[Callable] = None, reward_scale: float = 1.0,
                     on_error: str = "abort", max_errors: int = 0, parts: int = 1) -> BatchedEnv:
    """``num_envs`` copies of env ``name`` as one :class:`BatchedEnv`: the batched simulator's adapter for a
    ``jaxmarl:``/``vmas:`` name, else PettingZoo copies (:class:`VecEnv`); ``parts`` > 1 (``env.parts``, JaxMARL
    envs): stepped in that many parts (:attr:`~hpcmarl.envs.jaxmarl.JaxMarlEnv.parts`)."""
    if is_batched(name):
        _, cls, task = adapter(name)
        extra = {"parts": parts} if parts != 1 else {}
        return cls(task, num_envs, seed, kwargs, policy_map, with_state=with_state, obs_transform=obs_transform,
                   reward_scale=reward_scale, on_error=on_error, max_errors=max_errors, **extra)
    return VecEnv(name, num_envs, seed, kwargs, policy_map, obs_transform=obs_transform, with_state=with_state,
                  reward_scale=reward_scale, on_error=on_error, max_errors=max_errors)


def probe_spec(name: str, kwargs=None, policy_map=None, with_state: bool = False) -> EnvSpec:
    """The :class:`~hpcmarl.envs.spec.EnvSpec` of env ``name`` (groups, spaces, global state), any kind of env."""
    if is_batched(name):
        module, _, task = adapter(name)
        return module.probe(task, kwargs, policy_map=policy_map, with_state=with_state)
    return probe_pettingzoo(name, kwargs, policy_map, with_state)


def describe_env(name: str, kwargs=None, policy_map=None) -> List[str]:
    """What hpcmarl found in an env (``hpcmarl validate --probe-env``)."""
    if not is_batched(name):
        return describe_pettingzoo(name, kwargs, policy_map)
    module, _, task = adapter(name)
    if callable(getattr(module, "describe", None)):
        return module.describe(task, kwargs, policy_map)
    s = module.probe(task, kwargs, policy_map=policy_map)
    try:
        state = f"global state of {module.probe(task, kwargs, policy_map=policy_map, with_state=True).state_dim}"
    except EnvError:
        state = "no global state (critic_input=obs only)"
    lines = [f"{name}: batched {batched_prefix(name)} env, {state}"]
    for g in s.groups:
        act = (f"Discrete({g.n_actions})" if g.discrete
               else f"Box({g.act_dim}) in [{np.min(g.act_low):g}, {np.max(g.act_high):g}]")
        lines.append(f"group {g.name}: {g.n} agent(s) {g.agents}, obs {g.obs_shape}, actions {act}")
    return lines


def entry(name: str, kwargs: Optional[dict] = None) -> EnvEntry:
    """The registry entry of ``name`` (:func:`hpcmarl.envs.registry.entry`); for a batched env one made from its spec:
    default groups by agent-name prefix, cooperative when that is one group, never turn-based."""
    if not is_batched(name):
        return registry_entry(name, kwargs)
    return _batched_entry(name, json.dumps(kwargs or {}, sort_keys=True, default=str))


@functools.lru_cache(maxsize=None)
def _batched_entry(name: str, kwargs_key: str) -> EnvEntry:
    s = probe_spec(name, json.loads(kwargs_key))
    groups = {g.name: list(g.agents) for g in s.groups}
    prefix = batched_prefix(name)
    module, _, task = adapter(name)
    limit = module.episode_limit(task, json.loads(kwargs_key)) if hasattr(module, "episode_limit") else 0
    return EnvEntry(name, groups, {}, f"batched {prefix} environment {task}", cooperative=len(groups) == 1,
                    install=f'pip install -e ".[{BATCHED_EXTRAS[prefix]}]"', episode_limit=int(limit or 0))
