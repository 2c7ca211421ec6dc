"""Episode stitching and episode replay for off-policy value-based learners (shared by plug-ins; QMIX / VDN use it).

What a plug-in needs. Records in: the unroll records its actors send (:func:`hpcmarl.comm.spec.unroll_spec` of a
discrete-action env); the stitcher reads ``env_done`` and per group ``obs``, ``alive``, ``action``, ``action_mask``,
``reward``, ``terminated`` (with ``bootstrap_truncated`` also ``truncated`` and ``final_obs``), plus ``state`` and
``final_state`` when the env has a state. ``EpisodeStitcher(spec, max_len, bootstrap_truncated).add(record, actor)``
returns the episode segments that record completed: dicts of numpy arrays ``[length(+1), ...]`` (the team ``reward``,
``terminal``, per group ``<group>/obs``, ``alive``, ``action``, ``action_mask``, and ``state``), which go into an
``EpisodeReplay(spec, capacity, max_len)`` with :meth:`EpisodeReplay.add`. Batches out:
``replay.batch(replay.sample(k, rng, recent, recent_fraction), device)`` gives those fields as ``[B, L(+1), ...]``
torch tensors trimmed to the longest sampled segment, plus ``valid [B, L]``. The replay's
``state_arrays``/``load_state_arrays`` go into the learner's checkpoint arrays (under ``local/replay/``: each
learner's own). Plain numpy and torch, no MPI.
"""
from __future__ import annotations

import os
from typing import Dict, List

import numpy as np
import torch

from hpcmarl.comm.spec import Record
from hpcmarl.envs import EnvSpec


class EpisodeStitcher:
    """Cuts T-step unrolls into episode segments per (actor, env copy): a segment ends with its episode
    (``terminal`` 1 at its last step) or after ``max_len`` steps (not terminal; the next observation is
    kept as row ``max_len`` for bootstrapping). With ``bootstrap_truncated`` an episode that ended by truncation
    (no agent terminated at its last step) is not terminal either: its final observation (and state) is that row.
    Every field is ``[length(+1), ...]``."""

    def __init__(self, spec: EnvSpec, max_len: int, bootstrap_truncated: bool = False):
        self.spec, self.max_len, self.bootstrap_truncated = spec, max_len, bootstrap_truncated
        self.partial: Dict[tuple, List[dict]] = {}

    def _rows(self, rec: Record, e: int, a: int, b: int) -> dict:
        out = {"reward": sum(rec[f"{g.name}/reward"][a:b, e].sum(-1) for g in self.spec.groups).astype(np.float32)}
        for g in self.spec.groups:
            n = g.name
            for k in ("obs", "alive", "action", "action_mask"):  # copies: the receive buffer is reused
                out[f"{n}/{k}"] = rec[f"{n}/{k}"][a:b, e].copy()
        if self.spec.state_dim:
            out["state"] = rec["state"][a:b, e].copy()
        return out

    def add(self, rec: Record, actor: int) -> List[dict]:
        """Episode segments completed by this unroll (arrays copied out of the receive buffer)."""
        T = rec["env_done"].shape[0]
        done_at = rec["env_done"]
        out = []
        for e in range(done_at.shape[1]):
            key = (actor, e)
            chunks = self.partial.setdefault(key, [])
            have = sum(len(c["reward"]) for c in chunks)
            start = 0
            while start < T:
                ends = np.flatnonzero(done_at[start:, e])
                end = start + int(ends[0]) + 1 if len(ends) else T
                end = min(end, start + self.max_len - have)
                chunks.append(self._rows(rec, e, start, end))
                have += end - start
                ended = bool(done_at[end - 1, e])
                truncated = ended and self.bootstrap_truncated and not any(
                    rec[f"{g.name}/terminated"][end - 1, e].any() for g in self.spec.groups)
                terminal = ended and not truncated
                if ended or have == self.max_len:
                    ep = {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}
                    ep["terminal"] = np.zeros(have, np.float32)
                    ep["terminal"][-1] = float(terminal)
                    for k in ["obs", "alive", "state"]:  # row `have`: what follows the segment
                        for g in (self.spec.groups if k != "state" else [None] if self.spec.state_dim else []):
                            name = f"{g.name}/{k}" if g is not None else k
                            if terminal:
                                last = np.zeros_like(rec[name][0, e])
                            elif truncated:  # the final observation; the agents it truncated
                                last = (rec[f"{g.name}/truncated"][end - 1, e] if k == "alive" else
                                        rec[f"{g.name}/final_obs" if g is not None else "final_state"][end - 1, e])
                            else:
                                last = rec[name][end, e]
                            ep[name] = np.concatenate([ep[name], last[None].astype(ep[name].dtype)])
                    for g in self.spec.groups:  # the next step's mask (unknown at the unroll's end or after a
                        k = f"{g.name}/action_mask"  # truncation: all available)
                        last = rec[k][end, e] if not ended and end < T else np.ones_like(rec[k][0, e])
                        ep[k] = np.concatenate([ep[k], last[None]])
                    out.append(ep)
                    chunks = self.partial[key] = []
                    have = 0
                start = end
        return out


class EpisodeReplay:
    """FIFO of episode segments padded to ``max_len`` (one ring of ``capacity``). The dual buffer of MAST
    is its newest ``recent`` entries: :meth:`sample` draws ``recent_fraction`` of a batch from them."""

    def __init__(self, spec: EnvSpec, capacity: int, max_len: int):
        self.spec, self.capacity, self.max_len = spec, capacity, max_len
        self.data: Dict[str, np.ndarray] = {}
        self.length = np.zeros(capacity, np.int64)
        self.size = self.pos = self.added = 0

    def add(self, ep: Dict[str, np.ndarray]) -> None:
        L = len(ep["reward"])
        if not self.data:
            shapes = {k: ((self.capacity, self.max_len + len(v) - L) + v.shape[1:], v.dtype) for k, v in ep.items()}
            need = sum(int(np.prod(sh)) * dt.itemsize for sh, dt in shapes.values())
            ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
            if need > 0.5 * ram:
                raise MemoryError(f"the episode replay needs {need / 2**30:.1f} GiB ({self.capacity} episodes x "
                                  f"{self.max_len} steps), more than half of this node's {ram / 2**30:.1f} GiB; "
                                  "lower algo.buffer_episodes or algo.episode_limit")
            self.data = {k: np.zeros(sh, dt) for k, (sh, dt) in shapes.items()}
        i = self.pos
        for k, v in ep.items():
            self.data[k][i] = 0
            self.data[k][i, :len(v)] = v
        self.length[i] = L
        self.pos = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)
        self.added += 1

    def sample(self, k: int, rng: np.random.Generator, recent: int = 0, recent_fraction: float = 0.0) -> np.ndarray:
        k_on = int(round(k * recent_fraction)) if recent > 0 else 0
        on = ((self.pos - 1 - rng.integers(0, min(recent, self.size), k_on)) % self.capacity if k_on
              else np.zeros(0, np.int64))
        off = rng.integers(0, self.size, k - k_on)
        return np.concatenate([on, off]).astype(np.int64)

    def state_arrays(self, prefix: str = "local/replay/") -> Dict[str, np.ndarray]:
        """The filled rows (all of them once the ring is full), their lengths and the ring's counters."""
        n = self.capacity if self.size == self.capacity else self.size
        out = {f"{prefix}data/{k}": v[:n] for k, v in self.data.items()}
        out[f"{prefix}length"] = self.length[:n]
        out[f"{prefix}counters"] = np.array([self.size, self.pos, self.added], np.int64)
        return out

    def load_state_arrays(self, arrays: Dict[str, np.ndarray], prefix: str = "local/replay/") -> None:
        if f"{prefix}counters" not in arrays:
            return  # a checkpoint without the replay: it refills
        self.size, self.pos, self.added = (int(x) for x in arrays[f"{prefix}counters"])
        n = len(arrays[f"{prefix}length"])
        self.length[:] = 0
        self.length[:n] = arrays[f"{prefix}length"]
        self.data = {}
        for k, v in arrays.items():
            if k.startswith(f"{prefix}data/"):
                v = np.asarray(v)
                self.data[k[len(prefix) + 5:]] = full = np.zeros((self.capacity,) + v.shape[1:], v.dtype)
                full[:n] = v

    def batch(self, idx: np.ndarray, device) -> Dict[str, torch.Tensor]:
        """``[B, L(+1), ...]`` tensors trimmed to the longest sampled segment, plus ``valid [B, L]``."""
        L = int(self.length[idx].max())
        out = {}
        for k, v in self.data.items():
            extra = v.shape[1] - self.max_len
            out[k] = torch.from_numpy(v[idx, :L + extra]).to(device)
        out["valid"] = (torch.arange(L)[None, :] < torch.from_numpy(self.length[idx])[:, None]).float().to(device)
        return out
