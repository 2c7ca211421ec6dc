"""Evaluate a saved policy: run its environment (no MPI) with the checkpoint's policy networks.

Returns per policy group the mean/std episode return summed over the group's agents (the same
measure as ``inspect``), optionally a GIF of the first episode where the environment renders
``rgb_array`` frames.
"""
from __future__ import annotations

import os
import sys
from typing import Dict, List, Optional

import numpy as np
import torch

from hpcmarl import trust
from hpcmarl.algos.base import make_inference
from hpcmarl.config import from_dict
from hpcmarl.envs import VecEnv, is_batched, make_batched_env, probe_spec
from hpcmarl.models import Inference
from hpcmarl.storage import StorageError, latest_checkpoint, load_checkpoint
from hpcmarl.typedconfig import safe_yaml


def checkpoint_of(path: str) -> str:
    """``path`` itself, or for a run directory its newest readable checkpoint."""
    if not os.path.isdir(path):
        return path
    found = latest_checkpoint(os.path.join(path, "checkpoints"), log=lambda m: print(m, file=sys.stderr),
                              select=lambda name: False)  # the newest whose attributes read (its arrays: later)
    if found is None:
        raise StorageError(f"{path}: no readable checkpoint in {os.path.join(path, 'checkpoints')}")
    return found[0]


def load_policy(ckpt: str):
    """``(config, policy)`` of a training checkpoint (``ckpt``: a checkpoint file, or a run directory: its newest
    readable checkpoint): the run's :class:`~hpcmarl.config.Config` and an :class:`~hpcmarl.models.Inference` of
    every policy group with the checkpoint's weights (``policy.act(obs, masks, greedy=...)``). Arrays only, nothing
    executed: the stored config's plug-ins and a ``module:callable`` env are imported only when the person named them
    (``--plugins``, ``--env-import``; in Python ``hpcmarl.trust.allowing([...])``). A league checkpoint is refused
    (its pool snapshots are played with ``hpcmarl match``)."""
    ckpt = checkpoint_of(ckpt)
    arrays, attrs = load_checkpoint(ckpt, select=lambda name: name.startswith("model/"))  # the networks only
    if "config" not in attrs:
        raise StorageError(f"{ckpt}: checkpoint has no config attribute")
    data = safe_yaml(attrs["config"], f"{ckpt}: its stored config", StorageError)
    if not isinstance(data, dict):
        raise StorageError(f"{ckpt}: stored config is not a mapping")
    with trust.reading(ckpt):
        cfg = from_dict(data)
        if cfg.league.enabled:
            raise StorageError(f"{ckpt} is a league checkpoint: play its policies with `hpcmarl match CKPT OPPONENT` "
                               f"(turn-based games) or against pool snapshots")
        spec = probe_spec(cfg.env.name, cfg.env.kwargs, cfg.policy_map)
    return cfg, policy_from_arrays(cfg, spec, arrays, int(attrs.get("update", 0)), ckpt)


def _policy_prefix(arrays) -> str:
    # "model/": a plug-in learner that saved its policies module alone (torch_state_arrays(policies, opt))
    return "model/policies." if any(k.startswith("model/policies.") for k in arrays) else "model/"


def policy_arrays(arrays: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """The policy networks' arrays of a checkpoint's arrays (what :func:`policy_from_arrays` loads)."""
    prefix = _policy_prefix(arrays)
    return {k: v for k, v in arrays.items() if k.startswith(prefix)}


def policy_from_arrays(cfg, spec, arrays: Dict[str, np.ndarray], version: int, source: str) -> Inference:
    """An :class:`~hpcmarl.models.Inference` of ``cfg``'s algorithm with the policy weights of checkpoint arrays
    (``model/policies.*``, or ``model/*`` from a plug-in that saved its policies module alone); ``source`` names
    them in errors."""
    prefix = _policy_prefix(arrays)
    state = {k[len(prefix):]: torch.from_numpy(np.array(v)) for k, v in arrays.items() if k.startswith(prefix)}
    with torch.device("meta"):  # the config's networks sized first, nothing allocated: a file's sizes checked
        want = {k: tuple(v.shape) for k, v in make_inference(spec, cfg.algo).policies.state_dict().items()}
    have = {k: tuple(v.shape) for k, v in state.items()}
    if want != have:
        k = sorted(set(want) ^ set(have) or {k for k in want if want[k] != have[k]})[0]
        raise StorageError(f"{source}: policy weights do not fit the config's networks: {k} is "
                           f"{have.get(k, 'absent')} in the checkpoint, {want.get(k, 'absent')} in the network")
    policy = make_inference(spec, cfg.algo)
    try:
        policy.policies.load_state_dict(state)
    except RuntimeError as e:
        raise StorageError(f"{source}: policy weights do not fit the config's networks: "
                           f"{str(e).splitlines()[0]}") from None
    policy.version = version
    return policy


def evaluate(ckpt: str, episodes: int = 100, seed: int = 12345, greedy: bool = False, num_envs: int = 8,
             render_gif: Optional[str] = None) -> Dict:
    ckpt = checkpoint_of(ckpt)  # a run directory: its newest readable checkpoint
    cfg, policy = load_policy(ckpt)
    with trust.reading(ckpt):
        return _evaluate(ckpt, cfg, policy, episodes, seed, greedy, num_envs, render_gif)


def _evaluate(ckpt: str, cfg, policy: Inference, episodes: int, seed: int, greedy: bool, num_envs: int,
              render_gif: Optional[str]) -> Dict:
    out = {"checkpoint": ckpt, "env": cfg.env.name, "algo": cfg.algo.name, "update": policy.version}
    out.update(play(cfg, policy, episodes, seed, greedy, num_envs))
    if render_gif:
        out["gif"] = render_episode(cfg, policy, render_gif, seed, greedy)
    return out


def play(cfg, policy: Inference, episodes: int, seed: int, greedy: bool, num_envs: int) -> Dict:
    """Play ``episodes`` episodes of ``cfg``'s env (``min(num_envs, episodes)`` copies, env and torch seed ``seed``)
    with ``policy``: per group the mean/std return and each episode's return, and each episode's length and outcome
    (``won``: NaN where the env has none) in the order the counted episodes ended, and the win rate. Seeds the global
    torch generator (the training run's evaluation forks it first)."""
    torch.manual_seed(seed)
    venv = make_batched_env(cfg.env.name, min(num_envs, episodes), seed, cfg.env.kwargs, cfg.policy_map)
    venv.reset()
    groups = [g.name for g in venv.spec.groups]
    returns: Dict[str, List[float]] = {g: [] for g in groups}
    lengths: List[int] = []
    won: List[float] = []
    started = venv.num_envs  # episodes begun; copies that would exceed `episodes` are not counted
    counted = np.ones(venv.num_envs, bool)
    while len(lengths) < episodes:
        actions, _ = policy.act(venv.obs, venv.action_mask, greedy=greedy)
        _, _, _, finished = venv.step(policy.to_env(actions))
        policy.episodes_ended([ep.env for ep in finished])
        for ep in finished:
            if counted[ep.env] and len(lengths) < episodes:
                lengths.append(ep.length)
                won.append(float(ep.won))
                for g in groups:
                    returns[g].append(ep.returns[g])
            counted[ep.env] = started < episodes
            started += 1
    venv.close()
    return {"episodes": episodes, "seed": seed, "greedy": greedy, "num_envs": venv.num_envs,
            "length_mean": float(np.mean(lengths)), "episode_lengths": lengths, "episode_won": won,
            "win_rate": float(np.mean(won)) if np.isfinite(won).all() else float("nan"),
            "groups": {g: {"return_mean": float(np.mean(r)), "return_std": float(np.std(r)), "episodes": len(r),
                           "returns": [float(x) for x in r]} for g, r in returns.items()}}


def render_episode(cfg, policy: Inference, path: str, seed: int, greedy: bool) -> str:
    """Play one episode with ``render_mode='rgb_array'`` and write its frames as a GIF."""
    from PIL import Image

    if is_batched(cfg.env.name):
        raise StorageError(f"{cfg.env.name}: --render-gif renders PettingZoo environments; a batched environment has "
                           f"no render() here")
    venv = VecEnv(cfg.env.name, 1, seed, cfg.env.kwargs, cfg.policy_map, render_mode="rgb_array")
    env = venv.envs[0]
    venv.reset()
    frames = []
    try:
        for _ in range(100_000):
            frame = env.render()
            if frame is None:
                raise StorageError(f"{cfg.env.name} renders no rgb_array frames; --render-gif is not available for it")
            frames.append(Image.fromarray(np.asarray(frame, np.uint8)))
            actions, _ = policy.act(venv.obs, venv.action_mask, greedy=greedy)
            _, _, _, finished = venv.step(policy.to_env(actions))
            policy.episodes_ended([ep.env for ep in finished])
            if finished:
                break
    finally:
        env.close()
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=80, loop=0)
    return path
