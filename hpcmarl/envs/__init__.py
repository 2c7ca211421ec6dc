"""Environments: the registry and user env paths (:mod:`.registry`), specs (:mod:`.spec`), batched environments
(:mod:`.batched`: the interface; :mod:`.vec`: PettingZoo copies one by one) and adapters for Gymnasium multi-agent
suites (:mod:`.adapters`). Nothing here imports MPI."""
from hpcmarl.envs.batched import BatchedEnv, EpisodeStat
from hpcmarl.envs.registry import (
    BUILTIN_ENVS,
    REGISTRY,
    EnvEntry,
    EnvError,
    entry,
    load,
    magent_survivors,
    make_env,
    make_parallel_env,
    prefix_groups,
    register_env,
    resolve_groups,
)
from hpcmarl.envs.spec import EnvSpec, GroupSpec, build_spec, describe_env, probe_spec
from hpcmarl.envs.vec import VecEnv

__all__ = ["BUILTIN_ENVS", "REGISTRY", "EnvEntry", "EnvError", "entry", "load", "magent_survivors", "make_env",
           "make_parallel_env", "prefix_groups", "register_env", "resolve_groups", "EnvSpec", "GroupSpec", "build_spec",
           "describe_env", "probe_spec",
           "BatchedEnv", "EpisodeStat", "VecEnv"]
