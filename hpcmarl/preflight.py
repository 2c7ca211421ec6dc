"""Pre-flight of a training run, without MPI: rank 0 decides fresh start vs. resume and checks the config against
the env, the algorithm and the checkpoint before anything is written (:func:`hpcmarl.launch.run_training` calls it
and broadcasts the answer)."""
from __future__ import annotations

import os

import numpy as np

from hpcmarl import runlock
from hpcmarl.algos import base as algos
from hpcmarl.algos.base import uses_state
from hpcmarl.config import Config
from hpcmarl.typedconfig import ConfigError, safe_yaml


class PreflightError(RuntimeError):
    pass


def preflight(cfg: Config, fresh: bool) -> dict:
    """Decide fresh start vs. resume without writing anything. Raises PreflightError (ConfigError: a live logger's
    package is missing)."""
    from hpcmarl import storage, tracking

    run_dir = cfg.resolved_run_dir
    info = {"run_dir": run_dir, "resume_path": None, "start_update": 0, "move_aside": False, "warnings": []}
    if os.path.exists(run_dir) and not os.path.isdir(run_dir):
        raise PreflightError(f"run directory {run_dir} exists and is not a directory")
    tracking.require(cfg.output.loggers, cfg.output.mlflow_uri)  # before training starts, not at the lead's open
    learner = probe_learner(cfg)
    if not os.path.isdir(run_dir) or not os.listdir(run_dir):
        return info
    if fresh:
        info["move_aside"] = runlock.fresh_aside(run_dir)  # only an hpcmarl run is moved aside (else NotARun)
        return info
    ckpts = storage.list_checkpoints(os.path.join(run_dir, "checkpoints"))
    if not ckpts:
        return info  # a run that died before its first checkpoint starts over in place
    found = storage.latest_checkpoint(os.path.join(run_dir, "checkpoints"), log=info["warnings"].append,
                                      bounded=False)  # the run's own state, as large as its config makes it
    if found is None:
        raise PreflightError(f"no readable checkpoint in {run_dir}/checkpoints ("
                             + "; ".join(w.replace("hpcmarl: warning: skipping ", "") for w in info["warnings"])
                             + "); start fresh with --fresh (the old run is moved aside)")
    path, arrays, attrs = found
    for key, want in (("env", cfg.env.name), ("algo", cfg.algo.name)):
        if str(attrs.get(key)) != want:
            raise PreflightError(f"{path} was written for {key} {attrs.get(key)!r}, the config asks for "
                                 f"{want!r}; use another run_dir or --fresh")
    changes = config_changes(str(attrs.get("config", "")), cfg)
    misfit = state_misfit(learner, arrays) if learner is not None else ""
    if misfit:
        raise PreflightError(f"cannot resume from {path}: its state does not fit this config's model ({misfit}); "
                             f"settings changed since it was written: {'; '.join(changes) or 'none'}. Resume with "
                             f"the run's settings ({os.path.join(run_dir, 'config.yaml')}), use another run_dir, "
                             f"or --fresh")
    if changes:
        info["warnings"].append("hpcmarl: warning: resuming with settings changed since the checkpoint: "
                                + "; ".join(changes))
    info["resume_path"] = path
    info["start_update"] = int(attrs["update"])
    return info


RESUME_FREE = ("train.", "output.", "runtime.", "fresh", "run_dir")  # run control: changes nothing a checkpoint holds


def config_changes(old_yaml: str, cfg: Config) -> list:
    """``key: old -> new`` for every config key (run control left out) that differs from the checkpoint's config."""
    from hpcmarl.typedconfig import ABSENT, flatten_config, to_dict

    try:
        old = flatten_config(safe_yaml(old_yaml, "the checkpoint's config") or {})
    except ConfigError:
        return []
    new = flatten_config(to_dict(cfg))
    keys = sorted(k for k in set(old) | set(new) if not k.startswith(RESUME_FREE))
    pairs = {k: (old.get(k, ABSENT), new.get(k, ABSENT)) for k in keys}
    return [f"{k}: {a} -> {b}" for k, (a, b) in pairs.items() if repr(a) != repr(b)]


def probe_learner(cfg: Config):
    """Build one env and (outside league mode, for algorithms with a learner object) one learner of ``cfg`` on the
    CPU, so that env arguments, policy maps and algorithm/env mismatches (the action kinds the registry entry
    declares, e.g. QMIX's discrete ones) are bad input before anything is written (the global torch random state is
    kept). Returns the learner (or None).

    Raises:
        PreflightError: the env cannot be built, or the algorithm does not suit it (one line).
    """
    from hpcmarl.envs import EnvError, is_batched, make_env, probe_spec

    algo = algos.get(cfg.algo.name)
    try:
        builds = not cfg.league.enabled and algo.learner is not None
        if not builds and algo.discrete and algo.continuous:
            if is_batched(cfg.env.name):
                probe_spec(cfg.env.name, cfg.env.kwargs, cfg.policy_map)
            else:
                make_env(cfg.env.name, cfg.env.kwargs).close()
            return None
        spec = probe_spec(cfg.env.name, cfg.env.kwargs, cfg.policy_map, builds and uses_state(cfg.algo))
        check_action_kinds(cfg, algo, spec)
        if not builds:
            return None
        import torch

        with torch.random.fork_rng(devices=[]):
            return algo.make_learner(spec, cfg.algo, torch.device("cpu"), seed=cfg.seed, init_seed=cfg.seed)
    except (EnvError, ValueError) as e:
        raise PreflightError(str(e)) from None


def check_action_kinds(cfg: Config, algo: algos.Algorithm, spec) -> None:
    """Refuse an env group whose actions are of a kind the algorithm does not declare (``discrete``/``continuous``).

    Raises:
        ConfigError: naming ``algo.name``, the kind it needs, the group and the env with the arguments given.
    """
    for g in spec.groups:
        if not (algo.discrete if g.discrete else algo.continuous):
            have, need = ("discrete", "continuous") if g.discrete else ("continuous", "discrete")
            args = ", ".join(f"{k}={v!r}" for k, v in sorted((cfg.env.kwargs or {}).items()))
            raise ConfigError(f"config key 'algo.name': {cfg.algo.name} needs {need} actions; group {g.name!r} of "
                              f"{cfg.env.name}{f' ({args})' if args else ''} has {have} ones")


def state_misfit(learner, arrays: dict) -> str:
    """Why a checkpoint's learner state cannot load into ``learner`` (:func:`probe_learner`; '' when it can):
    parameters the one has and the other lacks or holds in another shape, else whatever loading the lead learner's
    arrays raises."""
    import torch

    mine = "learners/00000/"
    lead = {**arrays, **{k[len(mine):]: v for k, v in arrays.items() if k.startswith(mine)}}
    fresh = {k: np.shape(v) for k, v in learner.state_arrays().items() if k.startswith(("model/", "target/"))}
    old = {k: np.shape(v) for k, v in lead.items() if k.startswith(("model/", "target/"))}
    bad = [f"{k}: {old[k] if k in old else 'absent'} in the checkpoint, {fresh[k] if k in fresh else 'absent'} now"
           for k in sorted(set(fresh) | set(old)) if fresh.get(k) != old.get(k)]
    if not bad:
        try:
            with torch.random.fork_rng(devices=[]):
                learner.load_state_arrays(lead)
        except Exception as e:  # noqa: BLE001 - any failure to load is the answer
            bad = [f"{type(e).__name__}: {str(e).strip().splitlines()[0][:200] if str(e).strip() else ''}"]
    return "; ".join(bad[:3]) + (f"; and {len(bad) - 3} more" if len(bad) > 3 else "")
