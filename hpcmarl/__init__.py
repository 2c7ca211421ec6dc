"""hpcmarl: multi-agent RL on HPC clusters.

The public API, for plug-in authors and analysts (docs/extending/api.md)::

    import hpcmarl
    hpcmarl.register_algorithm(hpcmarl.Algorithm("reinforce", ReinforceConfig, ReinforceLearner))
    hpcmarl.register_env("walk_v0", "examples.walk_env:parallel_env", {"walker": ["walker_*"]})
    cfg = hpcmarl.load_config("configs/simple_spread_mappo.yaml", ["algo.lr=3e-4"])
    summary = hpcmarl.run_summary(hpcmarl.Run("runs/demo"))
    cfg, policy = hpcmarl.load_policy("runs/demo")

Every name is imported when first used (PEP 562), so ``import hpcmarl`` (the CLI's first import) loads neither
torch nor MPI. Anything else under ``hpcmarl.*`` is internal and may change between versions.
"""
import importlib

__version__ = "0.1.0"

# public name -> (module, attribute): a constant of this file, never read from anywhere else
_API = {
    # algorithms and data flows
    "register_algorithm": ("hpcmarl.algos.base", "register"),
    "Algorithm": ("hpcmarl.algos.base", "Algorithm"),
    "Learner": ("hpcmarl.algos.base", "Learner"),
    "register_flow": ("hpcmarl.flows", "register_flow"),
    "Flow": ("hpcmarl.flows", "Flow"),
    # environments
    "register_env": ("hpcmarl.envs.registry", "register_env"),
    "EnvEntry": ("hpcmarl.envs.registry", "EnvEntry"),
    # configuration
    "load_config": ("hpcmarl.config", "load_config"),
    "ConfigError": ("hpcmarl.config", "ConfigError"),
    # building blocks of a learner (torch)
    "batch_from_unrolls": ("hpcmarl.algos.ppo", "batch_from_unrolls"),
    "gae": ("hpcmarl.algos.ppo", "gae"),
    "masked_mean": ("hpcmarl.algos.ppo", "masked_mean"),
    "torch_state_arrays": ("hpcmarl.models", "torch_state_arrays"),
    "load_torch_state_arrays": ("hpcmarl.models", "load_torch_state_arrays"),
    "flat_params": ("hpcmarl.models", "flat_params"),
    "policy_inference": ("hpcmarl.models", "policy_inference"),
    # reading runs
    "Run": ("hpcmarl.storage.reader", "Run"),
    "run_summary": ("hpcmarl.analysis.summary", "run_summary"),
    "iter_episodes": ("hpcmarl.analysis.trajectories", "iter_episodes"),
    "Trajectories": ("hpcmarl.analysis.trajectories", "Trajectories"),
    "load_policy": ("hpcmarl.analysis.evaluate", "load_policy"),
}

__all__ = ["__version__"] + list(_API)


def __getattr__(name: str):
    """The public name ``name``, imported on first use and kept (a submodule or an unknown name: AttributeError, so
    ``from hpcmarl import trust`` still imports the submodule)."""
    try:
        module, attr = _API[name]
    except KeyError:
        raise AttributeError(f"module 'hpcmarl' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
