"""The writers of a run's HDF5 outputs: row tables, ``run.h5`` (:class:`RunWriter`) and the actors' trajectory files
(:class:`TrajectoryWriter`)."""
from __future__ import annotations

import os
import random
import time
from typing import Dict, List, Optional, Tuple

import h5py
import numpy as np

from hpcmarl.storage.files import (
    KIND_RUN,
    KIND_TRAJ,
    SCHEMA_VERSION,
    check_read,
    ensure_space,
    fsync_path,
    open_for_append,
)
from hpcmarl.storage.schema import EPISODES, columns


def _attr(v):
    if isinstance(v, (dict, list, tuple)):
        import json

        return json.dumps(v)
    if isinstance(v, str):
        return v.replace("\x00", "")
    return v


# --------------------------------------------------------------------------------------------------
# tables: groups of resizable datasets with one row count
# --------------------------------------------------------------------------------------------------
class Table:
    """Columns = 1-D (or N-D) datasets under one group that grow together along axis 0."""

    def __init__(self, group: h5py.Group, columns: Dict[str, Tuple[tuple, str]], chunk_rows: int = 256,
                 compression: Optional[str] = None):
        """A column the group does not have yet (a run.h5 of an older hpcmarl, resumed) is created with the rows the
        others hold, filled with its fill value (NaN for floats, else 0)."""
        self.group = group
        self.cols: Dict[str, h5py.Dataset] = {}
        have = [group[n].shape[0] for n in columns if n in group]
        rows = min(have, default=0)
        for name, (shape, dtype) in columns.items():
            if name in group:
                self.cols[name] = group[name]
            else:
                fill = np.nan if np.dtype(dtype).kind == "f" else 0
                self.cols[name] = group.create_dataset(
                    name, (rows,) + tuple(shape), maxshape=(None,) + tuple(shape), dtype=dtype,
                    chunks=(chunk_rows,) + tuple(shape), compression=compression, fillvalue=fill)

    @property
    def rows(self) -> int:
        return min((d.shape[0] for d in self.cols.values()), default=0)

    def append(self, data: Dict[str, np.ndarray]) -> None:
        k = len(next(iter(data.values())))
        if k == 0:
            return
        n = self.rows
        for name, d in self.cols.items():
            d.resize((n + k,) + d.shape[1:])
            if name in data:
                d[n:n + k] = data[name]

    def truncate(self, n: int) -> None:
        for d in self.cols.values():
            if d.shape[0] > n:
                d.resize((n,) + d.shape[1:])


def read_table(group: h5py.Group, limit: Optional[int] = None) -> Dict[str, np.ndarray]:
    """All datasets under ``group`` by relative path, cut to the common row count (a live writer may have grown some
    columns already). Refused (:class:`StorageError`) before anything is read when they would take more than
    ``limit`` bytes (default :func:`read_limit`)."""
    cols: Dict[str, h5py.Dataset] = {}
    group.visititems(lambda n, o: cols.__setitem__(n, o) if isinstance(o, h5py.Dataset) else None)
    n = min((d.shape[0] if d.shape else 0 for d in cols.values()), default=0)
    check_read(group.file.filename, f"{group.name} ({n:,} rows)", cols.values(), n, limit)
    return {k: d[:n] for k, d in cols.items()}


# --------------------------------------------------------------------------------------------------
# run.h5
# --------------------------------------------------------------------------------------------------
class RunWriter:
    """The lead learner's ``run.h5``. Metric columns are fixed by the first logged row."""

    def __init__(self, path: str, attrs: dict, groups: List[str], resume_rows: Optional[Dict[str, int]] = None,
                 flush_s: float = 5.0, tables: Optional[Dict[str, Dict[str, Tuple[tuple, str]]]] = None,
                 reserve_mb: float = 64.0):
        """``tables``: further row tables (name -> columns), created before SWMR starts. Every row logged first
        checks that ``reserve_mb`` MiB stay free (:func:`ensure_space`)."""
        self.path, self.reserve_mb = path, reserve_mb
        ensure_space(path, 0, reserve_mb)
        self.groups = groups
        self.flush_s = flush_s
        self._last_flush = time.monotonic()
        exists = os.path.exists(path)
        if exists and resume_rows is not None:
            self.f = open_for_append(path)
        else:
            self.f = h5py.File(path, "w", libver="latest")
            self.f.attrs["kind"] = KIND_RUN
            self.f.attrs["schema_version"] = SCHEMA_VERSION
        for k, v in attrs.items():
            self.f.attrs[k] = _attr(v)
        self.episodes = Table(self.f.require_group("episodes"), columns(EPISODES, groups),
                              chunk_rows=1024)
        self.tables = {name: Table(self.f.require_group(name), cols, chunk_rows=1024)
                       for name, cols in (tables or {}).items()}
        self.metrics: Optional[Table] = None
        mg = self.f.require_group("metrics")
        names = []
        mg.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
        if names:
            self.metrics = Table(mg, {k: ((), "f8") for k in names})
        # resume: tables holding fewer rows than the checkpoint counts (name -> (rows, counted)); impossible since
        # run.h5 is flushed before every checkpoint (RunLog.save_checkpoint), but a run of an older hpcmarl lost them
        self.short: Dict[str, Tuple[int, int]] = {}
        if resume_rows is not None:  # drop rows written after the checkpoint we resume from
            have = self.rows()
            self.short = {k: (have.get(k, 0), int(n)) for k, n in resume_rows.items() if have.get(k, 0) < int(n)}
            self.episodes.truncate(resume_rows.get("episodes", 0))
            for name, t in self.tables.items():
                t.truncate(resume_rows.get(name, 0))
            if self.metrics is not None:
                self.metrics.truncate(resume_rows.get("metrics", 0))
        self._dropped_keys = set()
        if self.metrics is not None:
            self.f.swmr_mode = True

    def log_metrics(self, row: Dict[str, float]) -> None:
        ensure_space(self.path, 0, self.reserve_mb)
        if self.metrics is None:
            self.metrics = Table(self.f.require_group("metrics"), {k: ((), "f8") for k in sorted(row)})
            self.f.swmr_mode = True
        extra = set(row) - set(self.metrics.cols)
        self._dropped_keys |= extra
        self.metrics.append({k: np.asarray([row.get(k, np.nan)], np.float64) for k in self.metrics.cols})
        self.maybe_flush()

    def add_episodes(self, cols: Dict[str, np.ndarray]) -> None:
        self.episodes.append(cols)

    def append(self, table: str, cols: Dict[str, np.ndarray]) -> None:
        self.tables[table].append(cols)

    def rows(self) -> Dict[str, int]:
        out = {"episodes": self.episodes.rows, "metrics": self.metrics.rows if self.metrics else 0}
        out.update({name: t.rows for name, t in self.tables.items()})
        return out

    def set_attr(self, key, value) -> None:
        if not self.f.swmr_mode:
            self.f.attrs[key] = _attr(value)

    def maybe_flush(self, force: bool = False) -> None:
        if force or time.monotonic() - self._last_flush >= self.flush_s:
            self.f.flush()
            self._last_flush = time.monotonic()

    def flush(self) -> None:
        """Every row logged so far on disk (HDF5 flush, then fsync): done before a checkpoint records the row counts."""
        self.maybe_flush(force=True)
        fsync_path(self.path)

    def close(self) -> None:
        if self.f.id.valid:
            self.f.flush()
            self.f.close()


# --------------------------------------------------------------------------------------------------
# trajectories/actor-NNNNN.h5
# --------------------------------------------------------------------------------------------------
class TrajectoryWriter:
    """Writes complete episodes of one actor; each episode is kept with probability ``fraction``.

    Each episode row carries ``update``: the learner update that trains on the unroll the episode ended in. The
    synchronous flow knows it exactly (an actor's k-th unroll of a session, k = 1, 2, ..., is trained in update
    ``start_update + k``, with ``actors.overlap`` too), so these rows match run.h5 ``/episodes/update``; where it is
    not known (the asynchronous flow) it is the earliest update that can train on it, policy version + 1.

    Resume (``resume_update``: the checkpoint's update counter) rolls the file back to the checkpoint: the episodes
    with ``update > resume_update`` (written after the checkpoint; the resumed run makes them again, bitwise the same
    where the resume is exact) and the steps behind them are cut, so no episode is there twice, episode numbers
    continue without a gap and policy versions never go backwards. Episodes a killed actor had not flushed yet are
    not recovered (they were never on disk). A file without the column (an older hpcmarl) gets it as policy version
    + 1, exact for the synchronous flow without ``actors.overlap``. ``resume`` without ``resume_update`` appends.
    """

    def __init__(self, path: str, env_spec, num_envs: int, fraction: float, seed: int, resume: bool,
                 flush_s: float = 5.0, attrs: Optional[dict] = None, reserve_mb: float = 64.0,
                 resume_update: Optional[int] = None):
        self.env_spec, self.E, self.fraction = env_spec, num_envs, fraction
        self.path, self.reserve_mb = path, reserve_mb
        ensure_space(path, 0, reserve_mb)
        self.rng = random.Random(seed)
        self.flush_s = flush_s
        self._last_flush = time.monotonic()
        # each dataset's chunk cache holds two chunks of its widest field (h5py's default, 8 MiB per dataset, grew an
        # actor's RSS by ~100 MiB over its first GB of trajectories: tools/soak.py +14% in 25 minutes); a cache
        # smaller than a chunk would rewrite compressed chunks on every append (the file doubled)
        rows = 1024
        widest = max(8 * g.n * max(g.obs_dim, int(np.prod(g.action_shape or (1,)))) for g in env_spec.groups)
        cache = dict(rdcc_nbytes=max(1 << 20, 2 * rows * widest))
        if resume and os.path.exists(path):
            self.f = open_for_append(path, **cache)
        else:
            self.f = h5py.File(path, "w", libver="latest", **cache)
            self.f.attrs["kind"] = KIND_TRAJ
            self.f.attrs["schema_version"] = SCHEMA_VERSION
            self.f.attrs["groups"] = _attr({g.name: g.agents for g in env_spec.groups})
            for k, v in (attrs or {}).items():
                self.f.attrs[k] = _attr(v)
        cols = {"env": ((), "i4"), "episode": ((), "i8"), "t": ((), "i4"), "policy_version": ((), "i8")}
        for g in env_spec.groups:
            n = g.n
            cols.update({
                f"{g.name}/obs": ((n, g.obs_dim), "f4"),
                f"{g.name}/action": ((n,) + g.action_shape, "i8" if g.discrete else "f4"),
                f"{g.name}/logp": ((n,), "f4"),
                f"{g.name}/reward": ((n,), "f4"),
                f"{g.name}/terminated": ((n,), "u1"),
                f"{g.name}/truncated": ((n,), "u1"),
                f"{g.name}/alive": ((n,), "u1"),
            })
        self.steps = Table(self.f.require_group("steps"), cols, chunk_rows=rows, compression="lzf")
        ep_cols = {"episode": ((), "i8"), "env": ((), "i4"), "start": ((), "i8"), "length": ((), "i4"),
                   "policy_version_first": ((), "i8"), "policy_version_last": ((), "i8"), "update": ((), "i8")}
        ep_cols.update({f"return/{g.name}": ((), "f8") for g in env_spec.groups})
        eg = self.f.require_group("episodes")
        if "policy_version_last" in eg and "update" not in eg:  # written before the column existed
            eg.create_dataset("update", data=eg["policy_version_last"][()].astype(np.int64) + 1, maxshape=(None,),
                              chunks=(256,), fillvalue=0)
        self.episodes = Table(eg, ep_cols, chunk_rows=256)
        self.rolled_back = 0  # episodes cut by the resume
        if resume_update is not None:
            self._roll_back(int(resume_update))
        n = self.episodes.rows
        self.next_episode = int(self.episodes.cols["episode"][n - 1]) + 1 if n else 0
        self.f.swmr_mode = True
        self._pending: List[List[dict]] = [[] for _ in range(num_envs)]
        self._keep = [self._draw() for _ in range(num_envs)]
        self.discarded = 0

    def _roll_back(self, update: int) -> None:
        """Keep the leading episodes trained on by update ``update`` (at most) whose steps are all in the file (a
        killed writer may have flushed one table further than the other); cut the rest and the steps behind them."""
        n = self.episodes.rows
        cols = self.episodes.cols
        ends = cols["start"][:n] + cols["length"][:n]
        ok = (cols["update"][:n] <= update) & (ends <= self.steps.rows)
        keep = n if ok.all() else int(np.argmin(ok))
        self.episodes.truncate(keep)
        self.steps.truncate(int(ends[keep - 1]) if keep else 0)
        self.rolled_back = n - keep

    def _draw(self) -> bool:
        return self.fraction >= 1.0 or self.rng.random() < self.fraction

    def add_unroll(self, rec, env_done: np.ndarray, version: int, update: Optional[int] = None) -> None:
        """Split an unroll record at episode ends (``env_done [T, E]``); episodes that finished in it
        are written together (one append per dataset per unroll keeps the HDF5 overhead small). ``update``: the
        learner update that trains on this unroll (default ``version + 1``, see the class)."""
        ensure_space(self.path, rec.buf.nbytes, self.reserve_mb)  # an unroll's steps are at most its record's size
        T = env_done.shape[0]
        keys = [k for k in self.steps.cols if "/" in k]
        done_eps = []
        for i in range(self.E):
            ends = np.flatnonzero(env_done[:, i])
            start = 0
            for stop in list(ends + 1) + [T]:
                if stop <= start:
                    continue
                if self._keep[i]:
                    seg = {k: rec[k][start:stop, i].copy() for k in keys}
                    seg["len"], seg["version"] = stop - start, version
                    self._pending[i].append(seg)
                if stop - 1 in ends:
                    if self._keep[i]:
                        done_eps.append((i, self._pending[i]))
                    self._pending[i] = []
                    self._keep[i] = self._draw()
                start = stop
        if done_eps:
            self._write_episodes(done_eps, keys, version + 1 if update is None else update)
        self.maybe_flush()

    def _write_episodes(self, done_eps, keys, update: int) -> None:
        start = self.steps.rows
        steps = {k: [] for k in ["env", "episode", "t", "policy_version"] + keys}
        rows = {k: [] for k in self.episodes.cols}
        for i, segs in done_eps:
            L = sum(s["len"] for s in segs)
            ep = self.next_episode
            self.next_episode += 1
            steps["env"].append(np.full(L, i, np.int32))
            steps["episode"].append(np.full(L, ep, np.int64))
            steps["t"].append(np.arange(L, dtype=np.int32))
            steps["policy_version"].append(np.concatenate([np.full(s["len"], s["version"], np.int64) for s in segs]))
            for k in keys:
                steps[k].append(np.concatenate([s[k] for s in segs]))
            rows["episode"].append(ep)
            rows["env"].append(i)
            rows["start"].append(start)
            rows["length"].append(L)
            rows["policy_version_first"].append(segs[0]["version"])
            rows["policy_version_last"].append(segs[-1]["version"])
            rows["update"].append(update)
            for g in self.env_spec.groups:
                rows[f"return/{g.name}"].append(float(sum(s[f"{g.name}/reward"].sum() for s in segs)))
            start += L
        self.steps.append({k: np.concatenate(v) for k, v in steps.items()})
        self.episodes.append({k: np.asarray(v) for k, v in rows.items()})

    def maybe_flush(self, force: bool = False) -> None:
        if force or time.monotonic() - self._last_flush >= self.flush_s:
            self.f.flush()
            self._last_flush = time.monotonic()

    def close(self) -> int:
        """Close; episodes still in flight are discarded. Returns how many were."""
        self.discarded = sum(1 for p in self._pending if p)
        if self.f.id.valid:
            self.f.flush()
            self.f.close()
        return self.discarded
