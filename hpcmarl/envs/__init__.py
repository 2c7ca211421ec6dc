"""Environments: the registry and user env paths (:mod:`.registry`), specs (:mod:`.spec`), batched environments
(:mod:`.batched`: the interface; :mod:`.vec`: PettingZoo copies one by one; :mod:`.jaxmarl`, :mod:`.vmas`: batched
simulators, ``jaxmarl:<env>``/``vmas:<scenario>``), :mod:`.make` (building any of them: the ``entry``, ``probe_spec``,
``describe_env`` and ``make_batched_env`` exported here) and adapters for Gymnasium multi-agent suites
(:mod:`.adapters`). Nothing here imports MPI."""
from hpcmarl.envs.batched import BatchedEnv, EpisodeStat
from hpcmarl.envs.make import describe_env, entry, is_batched, make_batched_env, probe_spec
from hpcmarl.envs.registry import (
    BATCHED,
    BUILTIN_ENVS,
    REGISTRY,
    EnvEntry,
    EnvError,
    load,
    magent_survivors,
    make_env,
    make_parallel_env,
    prefix_groups,
    register_env,
    resolve_groups,
)
from hpcmarl.envs.spec import EnvSpec, GroupSpec, build_spec
from hpcmarl.envs.vec import VecEnv

__all__ = ["BUILTIN_ENVS", "REGISTRY", "EnvEntry", "EnvError", "entry", "load", "magent_survivors", "make_env",
           "make_parallel_env", "prefix_groups", "register_env", "resolve_groups", "EnvSpec", "GroupSpec", "build_spec",
           "describe_env", "probe_spec",
           "BatchedEnv", "EpisodeStat", "VecEnv", "BATCHED", "is_batched", "make_batched_env"]
