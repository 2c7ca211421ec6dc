"""Frozen policy snapshots: HDF5 files under ``<run_dir>/pool/`` (arrays and attributes only), and the
actors' and evaluators' bank of member policies loaded from them (no MPI).
"""
from __future__ import annotations

import collections
import os
from typing import Dict, List, Optional, Tuple

import h5py
import numpy as np

from hpcmarl.envs import EnvSpec, GroupSpec
from hpcmarl.league.scripted import random_legal
from hpcmarl.league.seats import SELF, Opponents
from hpcmarl.models import Inference

KIND_POOL = "hpcmarl-pool"
RANDOM, LOOKAHEAD, CHARGE = -100, -101, -102  # member ids of the scripted baselines
BASELINE_IDS = {"random": RANDOM, "lookahead": LOOKAHEAD, "charge": CHARGE}
BASELINE_NAMES = {v: k for k, v in BASELINE_IDS.items()}


def snapshot_path(run_dir: str, group: str, version: int) -> str:
    return os.path.join(run_dir, "pool", f"{group}-v{version:07d}.h5")


def run_pool(run_dir: str, group: Optional[str] = None) -> Tuple[str, List[str]]:
    """``(group, snapshot files oldest first)`` of a league run's learner group (default: the first)."""
    import glob
    import json

    from hpcmarl.storage import Run, StorageError

    groups = json.loads(Run(run_dir).attrs().get("league_groups", "[]") or "[]")
    if not groups:
        raise StorageError(f"{run_dir} is not a league run (run.h5 has no league groups)")
    if not isinstance(groups, list) or not all(isinstance(g, str) and g and not set(g) & set("/\\*?[]")
                                               for g in groups):  # a name: never a path or a pattern
        raise StorageError(f"{run_dir}: run.h5 attribute 'league_groups' is not a list of group names")
    group = group or groups[0]
    if group not in groups:
        raise StorageError(f"{run_dir}: no league group {group!r} (groups: {', '.join(groups)})")
    files = sorted(glob.glob(os.path.join(run_dir, "pool", f"{group}-v*.h5")))
    if not files:
        raise StorageError(f"{run_dir}: group {group!r} has no pool snapshots yet")
    return group, files


def write_snapshot(path: str, params: np.ndarray, attrs: dict) -> str:
    """Atomic and durable: a temporary name, fsynced, renamed, the directory fsynced (readers never see a partial
    file; a crash leaves no empty one). A SIGKILL half-way leaves the temporary file to the next start
    (:func:`hpcmarl.storage.remove_stale_temporaries`)."""
    from hpcmarl.storage import SCHEMA_VERSION, durable_replace

    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with h5py.File(tmp, "w") as f:
        f.attrs["kind"] = KIND_POOL
        f.attrs["schema_version"] = SCHEMA_VERSION
        for k, v in attrs.items():
            f.attrs[k] = v
        f.create_dataset("params", data=np.asarray(params, np.float32))
    durable_replace(tmp, path)
    return path


def read_policy(path: str, group: Optional[str] = None) -> Tuple[np.ndarray, dict]:
    """Flat policy parameters and attributes from a pool snapshot or from a league checkpoint
    (``policy/<group>``; ``group`` may be omitted when the checkpoint holds one). A snapshot found in a pool
    directory is read inside it (a link leading out is refused); the parameters within the reader's memory limit."""
    from hpcmarl.storage import KIND_CKPT, StorageError, check_read, open_read

    root = os.path.dirname(path) if os.path.basename(os.path.dirname(os.path.abspath(path))) == "pool" else None
    with open_read(path, root=root) as f:
        kind = f.attrs.get("kind")
        kind = kind.decode() if isinstance(kind, bytes) else kind
        if kind == KIND_POOL and isinstance(f.get("params"), h5py.Dataset):
            attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
            check_read(path, "/params", [f["params"]])
            return f["params"][()], attrs
        if kind == KIND_CKPT and isinstance(f.get("policy"), h5py.Group):
            names = sorted(f["policy"])
            if group is None and len(names) > 1:
                raise StorageError(f"{path} holds the policies of groups {names}; choose one with --group")
            name = group if group is not None else names[0]
            if not isinstance(f["policy"].get(name), h5py.Dataset):
                raise StorageError(f"{path} has no policy of group {name!r} (groups: {names})")
            import json

            meta = f.attrs.get("policy_meta")
            try:
                meta = json.loads(meta.decode() if isinstance(meta, bytes) else meta)[name]
            except (TypeError, ValueError, KeyError):
                raise StorageError(f"{path}: damaged 'policy_meta' attribute (no JSON entry for group {name!r})") \
                    from None
            if not isinstance(meta, dict):
                raise StorageError(f"{path}: damaged 'policy_meta' attribute (group {name!r} is not an object)")
            check_read(path, f"/policy/{name}", [f["policy"][name]])
            return f["policy"][name][()], meta
    raise StorageError(f"{path} is neither a pool snapshot nor a league checkpoint")


def policy_from(params: np.ndarray, attrs: dict) -> Inference:
    """An :class:`Inference` for a snapshot's group (its attributes carry the network shape). The network its
    attributes describe is sized on torch's meta device first: one that does not hold exactly the stored parameters
    is refused (:class:`~hpcmarl.storage.StorageError`) before anything is allocated."""
    import torch

    from hpcmarl.storage import StorageError

    where = f"snapshot of {str(attrs.get('group', '?'))[:40]!r} version {str(attrs.get('version', '?'))[:20]}"
    try:
        g = GroupSpec(str(attrs["group"]), [str(attrs["policy_group"])], int(attrs["obs_dim"]), True,
                      n_actions=int(attrs["n_actions"]), obs_shape=tuple(int(x) for x in attrs.get("obs_shape", ())))

        def build():
            return Inference(EnvSpec(str(attrs["env"]), [g], 0), int(attrs["hidden"]), int(attrs["layers"]),
                             encoder=str(attrs.get("encoder", "mlp")))
        with torch.device("meta"):
            need = sum(p.numel() for p in build().params)
        have = int(np.size(params))
        if need != have:
            raise StorageError(f"{where}: its attributes describe a network of {need:,} parameters, it holds "
                               f"{have:,}; refused")
        inf = build()
        version = int(attrs["version"])
    except (KeyError, ValueError, TypeError, OverflowError) as e:
        raise StorageError(f"{where}: damaged attributes ({type(e).__name__}: {str(e)[:100]})") from None
    inf.load(params, version)
    inf.greedy = bool(attrs.get("greedy", False))
    return inf


def act(inf: Inference, obs: np.ndarray, mask: np.ndarray, greedy: bool) -> np.ndarray:
    """Actions ``[B]`` of a one-group policy for observations ``[B, obs_dim]`` and masks ``[B, n_actions]``; a greedy
    snapshot (``inf.greedy``) always takes its most likely action."""
    name = inf.spec.groups[0].name
    a, _ = inf.act({name: np.ascontiguousarray(obs[:, None], np.float32)}, {name: mask[:, None]},
                   greedy=greedy or inf.greedy)
    return a[name][:, 0]


def aec_player(inf: Inference, greedy: bool = True):
    """An AEC player ``obs dict -> action`` (observation + action mask) for a one-group policy."""
    return lambda obs: int(act(inf, np.asarray(obs["observation"], np.float32).reshape(1, -1),
                               np.asarray(obs["action_mask"], bool)[None], greedy)[0])


def baseline_player(member: int, seed: int):
    """The scripted AEC player with id ``RANDOM`` or ``LOOKAHEAD`` (Connect Four), seeded."""
    from hpcmarl.league.scripted import lookahead_player, random_player

    if member not in (RANDOM, LOOKAHEAD):
        raise ValueError(f"{BASELINE_NAMES.get(member, member)} is not a turn-based player")
    rng = np.random.default_rng(seed)
    return random_player(rng) if member == RANDOM else lookahead_player(rng)


class PolicyBank(Opponents):
    """Member policies by id: ``SELF`` is the actor's own current policy, ``RANDOM`` picks uniformly among legal
    actions, ``LOOKAHEAD`` and ``CHARGE`` are scripted players (:mod:`hpcmarl.league.scripted`), pool members
    are read from their snapshot files on first use (least recently used dropped)."""

    def __init__(self, own: Optional[Inference], rng: np.random.Generator, greedy: bool = False, capacity: int = 32):
        self.own, self.rng, self.greedy, self.capacity = own, rng, greedy, capacity
        self.paths: Dict[int, str] = {}
        self.cache: "collections.OrderedDict[int, Inference]" = collections.OrderedDict()

    def policy(self, member: int) -> Inference:
        if member == SELF:
            return self.own
        if member in self.cache:
            self.cache.move_to_end(member)
            return self.cache[member]
        if member not in self.paths:
            raise KeyError(f"league member {member} has no known snapshot file")
        inf = policy_from(*read_policy(self.paths[member]))
        self.cache[member] = inf
        if len(self.cache) > self.capacity:
            self.cache.popitem(last=False)
        return inf

    def act(self, member: int, group: str, obs: np.ndarray, mask: np.ndarray) -> np.ndarray:
        if member == RANDOM:
            return random_legal(self.rng, mask)
        if member == LOOKAHEAD:  # Connect Four's one-step lookahead on the flattened (6, 7, 2) board
            from hpcmarl.league.scripted import lookahead_player

            play = lookahead_player(self.rng)
            return np.array([play({"observation": o.reshape(6, 7, 2), "action_mask": m}) for o, m in zip(obs, mask)],
                            np.int64)
        if member == CHARGE:  # battle_v4's charge on the flattened (13, 13, 5) view
            from hpcmarl.league.scripted import VIEW, charge_actions

            return charge_actions(obs.reshape(len(obs), VIEW, VIEW, -1), self.rng)
        return act(self.policy(member), obs, mask, self.greedy)
