"""HDF5 outputs: writers and readers live together (``tools/`` and the CLI use the readers).

Files (schema version :data:`SCHEMA_VERSION`; layout documented in the README):

* ``run.h5`` — written by the lead learner only: root attributes (config, versions, rank map, SLURM
  variables), ``/metrics/<name>`` one row per logged update, ``/episodes/<column>`` one row per finished
  episode. Opened in SWMR mode once its datasets exist, so it can be read while the run goes on.
* ``trajectories/actor-NNNNN.h5`` — one writer per actor, SWMR; complete episodes only; a resume rolls it back to
  the checkpoint (:class:`TrajectoryWriter`).
* ``checkpoints/ckpt-NNNNNNNNN.h5`` — arrays and text attributes only; written to a temporary name, fsynced,
  renamed, the directory fsynced (:func:`durable_replace`); the last K are kept. run.h5 is flushed and fsynced
  first, so the row counts a checkpoint records are on disk.

Nothing is pickled: every dataset is a plain numeric array, every attribute a number or a string.
"""
from __future__ import annotations

import ctypes
import glob
import os
import errno
import random
import re
import shutil
import time
from typing import Dict, List, Optional, Tuple

import h5py
import numpy as np

SCHEMA_VERSION = 1
KIND_RUN, KIND_TRAJ, KIND_CKPT = "hpcmarl.run", "hpcmarl.trajectories", "hpcmarl.checkpoint"


class StorageError(RuntimeError):
    pass


class DiskFull(StorageError):
    """The run directory's file system is (nearly) full. Raised *before* a write, so HDF5 never meets ENOSPC
    half-way through one (it can crash on closing a file whose write failed)."""


def ensure_space(path: str, need_bytes: int = 0, reserve_mb: float = 64.0) -> None:
    """Raise :class:`DiskFull` unless the file system holding ``path`` has ``need_bytes`` free beyond a reserve of
    ``reserve_mb`` MiB (``output.min_free_mb``: room for the other ranks' writes between two checks)."""
    d = path
    while d and not os.path.isdir(d):
        d = os.path.dirname(d)
    u = shutil.disk_usage(d or ".")
    need = int(need_bytes) + int(reserve_mb * 2 ** 20)
    if u.free < need:
        raise DiskFull(f"no space left for {path}: its file system has {u.free / 2 ** 20:.1f} MiB free of "
                       f"{u.total / 2 ** 20:.1f} MiB, {need / 2 ** 20:.1f} MiB needed "
                       f"(output.min_free_mb = {reserve_mb:g} MiB kept free)")


def fsync_path(path: str) -> None:
    """fsync a file or a directory by name (a directory: the names created, renamed or removed in it)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def durable_replace(tmp: str, path: str) -> None:
    """Rename the complete file ``tmp`` to ``path`` so that a crash or a power loss leaves the old state or the whole
    new file: ``tmp`` fsynced before the rename, its directory after it (checkpoints, pool snapshots)."""
    fsync_path(tmp)
    os.replace(tmp, path)
    fsync_path(os.path.dirname(os.path.abspath(path)))


# what a writer killed half-way leaves in a run directory (temporary names, renamed once complete; the copies
# open_for_append makes of files a killed SWMR writer left)
STALE_TEMPORARIES = ("config.yaml.tmp", os.path.join("checkpoints", "ckpt-*.h5.tmp*"),
                     os.path.join("pool", "*.h5.tmp*"), "run.h5.repair", os.path.join("trajectories", "actor-*.h5.repair"))


def remove_stale_temporaries(run_dir: str) -> List[str]:
    """Remove the temporary files of writes that never finished (a SIGKILL during a checkpoint, a pool snapshot, the
    config's write or a repair); only called at a start, before any rank writes. Returns the paths removed."""
    removed = []
    for pattern in STALE_TEMPORARIES:
        for p in glob.glob(os.path.join(glob.escape(run_dir), pattern)):
            if os.path.isfile(p):
                os.remove(p)
                removed.append(p)
    return removed


def disk_full(exc: BaseException) -> bool:
    """``exc`` (or what caused it) says the disk is full: :class:`DiskFull`, or ENOSPC/EDQUOT from the OS or HDF5."""
    while exc is not None:
        if isinstance(exc, DiskFull) or getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "errno = 28" in str(exc) or "No space left on device" in str(exc) or quota_exceeded(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def quota_exceeded(exc: BaseException) -> bool:
    """``exc`` (or what caused it) is EDQUOT, from the OS or inside an HDF5 message: a full quota, not a full disk."""
    while exc is not None:
        text = str(exc)
        if getattr(exc, "errno", None) == errno.EDQUOT or f"errno = {errno.EDQUOT}," in text \
                or "quota exceeded" in text:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


# --------------------------------------------------------------------------------------------------
# opening files
# --------------------------------------------------------------------------------------------------
def open_for_append(path: str, **kwargs) -> h5py.File:
    """Open an existing file for appending (``kwargs``: file access options, e.g. ``rdcc_nbytes``); a file left open
    by a killed SWMR writer (its consistency flags still set) is rewritten from a read-only SWMR view first."""
    try:
        return h5py.File(path, "a", libver="latest", **kwargs)
    except OSError as e:
        if "consistency flags" not in str(e) and "already open for write" not in str(e):
            raise
    tmp = path + ".repair"
    with h5py.File(path, "r", swmr=True) as src, h5py.File(tmp, "w", libver="latest") as dst:
        for k, v in src.attrs.items():
            dst.attrs[k] = v
        for name in src:
            src.copy(src[name], dst, name=name)
    os.replace(tmp, path)
    return h5py.File(path, "a", libver="latest", **kwargs)


_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def check_file(path: str) -> None:
    """Cheap pre-flight check of an HDF5 file before it is opened: it exists, carries the HDF5
    signature and is not shorter than the end-of-file address its superblock records.

    A truncated file has to be caught here: opening one in SWMR-read mode (what ``open_read`` does)
    makes the HDF5 library retry its metadata reads for a very long time instead of failing. Files
    that a SWMR writer holds open right now (superblock v3 with the write and SWMR-write flags set) are
    not checked, as the HDF5 library itself does not check them either.
    """
    if not os.path.exists(path):
        raise StorageError(f"{path}: no such file")
    if not os.path.isfile(path):
        raise StorageError(f"{path}: not a regular file")
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        off = 0
        while off + 8 <= size:  # the superblock sits at 0, 512, 1024, 2048, ... (after a user block)
            fh.seek(off)
            if fh.read(8) == _SIGNATURE:
                break
            off = 512 if off == 0 else off * 2
        else:
            raise StorageError(f"{path}: not an HDF5 file")
        head = fh.read(56)  # bytes 8.. of the superblock
    truncated = StorageError(f"{path}: truncated or damaged HDF5 file ({size} bytes, superblock unreadable)")
    if len(head) < 4:
        raise truncated
    version = head[0]
    if version in (0, 1):
        o = head[13 - 8]
        base_at = (24 if version == 0 else 28) - 8
        flags, swmr_live = 0, False
    elif version in (2, 3):
        o = head[9 - 8]
        base_at = 12 - 8
        flags = head[11 - 8]
        swmr_live = version >= 3 and (flags & 0x1) and (flags & 0x4)
    else:
        raise StorageError(f"{path}: unknown HDF5 superblock version {version}")
    if o not in (2, 4, 8, 16) or len(head) < base_at + 3 * o:
        raise truncated
    base = int.from_bytes(head[base_at:base_at + o], "little")
    eof = int.from_bytes(head[base_at + 2 * o:base_at + 3 * o], "little")
    if swmr_live or eof == (1 << (8 * o)) - 1:
        return
    if size < base + eof:
        raise StorageError(f"{path}: truncated HDF5 file ({size} bytes, its superblock says {base + eof})")



# --------------------------------------------------------------------------------------------------
# opening files read-only
# --------------------------------------------------------------------------------------------------
# A SWMR reader retries a metadata read whose checksum fails (the writer may be half-way through a
# flush) with exponential back-off, 100 times by default: on a damaged or truncated file that is hours.
# 30 attempts keep the retries for a live file (they succeed within a few) but give up within ~1 s.
_SWMR_READ_ATTEMPTS = 30
_set_attempts = None


def _attempts_setter():
    """``H5Pset_metadata_read_attempts`` from the libhdf5 that h5py uses (h5py does not wrap it)."""
    global _set_attempts
    if _set_attempts is None:
        _set_attempts = False
        try:
            with open("/proc/self/maps") as fh:
                libs = sorted({ln.split()[-1] for ln in fh if re.search(r"/libhdf5[-_.]", ln) and "_hl" not in ln})
            if len(libs) == 1:
                fn = ctypes.CDLL(libs[0]).H5Pset_metadata_read_attempts
                fn.argtypes, fn.restype = [ctypes.c_int64, ctypes.c_uint], ctypes.c_int
                _set_attempts = fn
        except (OSError, AttributeError):
            pass
    return _set_attempts or None


def _open_swmr(path: str) -> h5py.File:
    """Read-only SWMR open with a bounded number of metadata read attempts (where it can be set)."""
    setter = _attempts_setter()
    if setter is not None:
        fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
        fapl.set_fclose_degree(h5py.h5f.CLOSE_STRONG)  # what h5py.File uses as well
        if setter(fapl.id, _SWMR_READ_ATTEMPTS) >= 0:
            fid = h5py.h5f.open(os.fsencode(path), h5py.h5f.ACC_RDONLY | h5py.h5f.ACC_SWMR_READ, fapl=fapl)
            return h5py.File(fid)
    return h5py.File(path, "r", swmr=True)


def first_line(e: BaseException) -> str:
    s = str(e).strip()
    return s.splitlines()[0] if s else type(e).__name__


def open_read(path: str, expect_kind: Optional[str] = None, swmr: bool = False) -> h5py.File:
    """Open an hpcmarl HDF5 file read-only, whether a writer still has it open or not.

    A closed file is opened normally first (HDF5 then checks it against truncation); a file that a SWMR
    writer has open (or that a killed one left flagged) is opened in SWMR-read mode. ``swmr=True``
    returns a SWMR-mode handle in any case (needed to read virtual datasets whose sources are live).
    Every problem is one :class:`StorageError` line that names the path: no such file, not HDF5,
    truncated/damaged (checked first: :func:`check_file`), being created (not yet in SWMR mode), wrong kind, wrong schema version.
    """
    if os.path.isdir(path):
        raise StorageError(f"{path}: is a directory, not an HDF5 file")
    check_file(path)  # no such file, not HDF5, truncated: before HDF5 gets to retry SWMR reads of a damaged file
    live = False
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        msg = first_line(e)
        if "already open for write" in msg or "consistency flags" in msg:
            live = True
        elif "lock" in msg:
            raise StorageError(f"{path}: being written and not readable yet (its writer has not switched to "
                               f"SWMR mode): {msg}") from None
        else:
            raise StorageError(f"{path}: cannot be read (truncated or damaged?): {msg}") from None
    if live or swmr:
        if not live:
            f.close()
        try:
            f = _open_swmr(path)
        except OSError as e:
            raise StorageError(f"{path}: cannot be read (truncated or damaged?): {first_line(e)}") from None
    try:
        kind = f.attrs.get("kind")
        ver = f.attrs.get("schema_version")
    except (OSError, RuntimeError, KeyError) as e:
        f.close()
        raise StorageError(f"{path}: cannot be read (truncated or damaged?): {first_line(e)}") from None
    if isinstance(kind, bytes):
        kind = kind.decode()
    if expect_kind is not None and kind != expect_kind:
        f.close()
        raise StorageError(f"{path}: not an hpcmarl {expect_kind.split('.')[-1]} file (kind={kind!r})")
    if ver is not None:
        try:
            ver = int(ver)
        except (TypeError, ValueError):
            ver = -1
        if ver != SCHEMA_VERSION:
            f.close()
            raise StorageError(f"{path}: schema version {ver}, this hpcmarl reads version {SCHEMA_VERSION}")
    return f


def damaged(path: str, e: BaseException) -> StorageError:
    return StorageError(f"{path}: cannot be read (truncated or damaged?): {first_line(e)}")


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
        self.group = group
        self.cols: Dict[str, h5py.Dataset] = {}
        for name, (shape, dtype) in columns.items():
            if name in group:
                self.cols[name] = group[name]
            else:
                fill = np.nan if np.dtype(dtype).kind == "f" else 0
                self.cols[name] = group.create_dataset(
                    name, (0,) + tuple(shape), maxshape=(None,) + tuple(shape), dtype=dtype,
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


def read_table(group: h5py.Group) -> Dict[str, np.ndarray]:
    """All datasets under ``group`` by relative path, cut to the common row count (a live writer may
    have grown some columns already)."""
    out: Dict[str, np.ndarray] = {}
    group.visititems(lambda n, o: out.__setitem__(n, o[()]) if isinstance(o, h5py.Dataset) else None)
    n = min((len(v) for v in out.values()), default=0)
    return {k: v[:n] for k, v in out.items()}


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
        ep_cols = {"actor": ((), "i4"), "env": ((), "i4"), "length": ((), "i4"), "policy_version": ((), "i8"),
                   "update": ((), "i8"), "env_steps": ((), "i8"), "wall_time": ((), "f8")}
        ep_cols.update({f"return/{g}": ((), "f8") for g in groups})
        self.episodes = Table(self.f.require_group("episodes"), ep_cols, chunk_rows=1024)
        self.tables = {name: Table(self.f.require_group(name), cols, chunk_rows=1024) for name, cols in (tables or {}).items()}
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


# --------------------------------------------------------------------------------------------------
# checkpoints
# --------------------------------------------------------------------------------------------------
_CKPT_RE = re.compile(r"ckpt-(\d+)\.h5$")


def checkpoint_path(ckpt_dir: str, update: int) -> str:
    return os.path.join(ckpt_dir, f"ckpt-{update:09d}.h5")


def list_checkpoints(ckpt_dir: str) -> List[str]:
    paths = [p for p in glob.glob(os.path.join(ckpt_dir, "ckpt-*.h5")) if _CKPT_RE.search(p)]
    return sorted(paths, key=lambda p: int(_CKPT_RE.search(p).group(1)))


def save_checkpoint(ckpt_dir: str, update: int, arrays: Dict[str, np.ndarray], attrs: dict, keep: int,
                    reserve_mb: float = 64.0) -> str:
    """Write atomically (temporary name, fsync, rename, directory fsync: :func:`durable_replace`) and keep the newest
    ``keep``. First checks that the uncompressed arrays fit with ``reserve_mb`` MiB to spare (:class:`DiskFull`
    otherwise, nothing written); a failed write removes its temporary file (never picked up: only complete
    ``ckpt-*.h5`` names are), a SIGKILL half-way leaves it to the next start (:func:`remove_stale_temporaries`)."""
    os.makedirs(ckpt_dir, exist_ok=True)
    path = checkpoint_path(ckpt_dir, update)
    arrays = {k: np.asarray(v) for k, v in arrays.items()}
    ensure_space(path, sum(v.nbytes for v in arrays.values()) + 2 ** 16, reserve_mb)
    tmp = path + f".tmp{os.getpid()}"
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs["kind"] = KIND_CKPT
            f.attrs["schema_version"] = SCHEMA_VERSION
            for k, v in attrs.items():
                f.attrs[k] = _attr(v)
            for k, v in arrays.items():
                f.create_dataset(k, data=v, compression="gzip" if v.size > 4096 else None)
            f.attrs["complete"] = 1
        durable_replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    for old in list_checkpoints(ckpt_dir)[:-keep]:
        os.remove(old)
    return path


def load_checkpoint(path: str) -> Tuple[Dict[str, np.ndarray], dict]:
    """Read every dataset and attribute; a truncated or incomplete file raises :class:`StorageError`."""
    try:
        with open_read(path, KIND_CKPT) as f:
            if int(f.attrs.get("complete", 0)) != 1:
                raise StorageError(f"{path}: checkpoint is incomplete")
            arrays: Dict[str, np.ndarray] = {}
            f.visititems(lambda name, obj: arrays.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
            attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
    except StorageError:
        raise
    except Exception as e:  # h5py raises OSError/KeyError/RuntimeError for damaged files
        raise StorageError(f"{path}: damaged checkpoint: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    return arrays, attrs


def latest_checkpoint(ckpt_dir: str, log=print) -> Optional[Tuple[str, Dict[str, np.ndarray], dict]]:
    """Newest readable checkpoint; damaged ones are reported and skipped."""
    for path in reversed(list_checkpoints(ckpt_dir)):
        try:
            arrays, attrs = load_checkpoint(path)
            return path, arrays, attrs
        except StorageError as e:
            log(f"hpcmarl: warning: skipping {e}")
    return None


# --------------------------------------------------------------------------------------------------
# reader
# --------------------------------------------------------------------------------------------------
class Run:
    """Read-only view of a run directory (what ``inspect`` and ``tools/`` use)."""

    def __init__(self, run_dir: str):
        if not os.path.isdir(run_dir):
            raise StorageError(f"{run_dir}: no such run directory")
        self.dir = run_dir
        self.run_path = os.path.join(run_dir, "run.h5")
        if not os.path.exists(self.run_path):
            raise StorageError(f"{run_dir}: no run.h5 (not an hpcmarl run directory, or the run never started)")

    def open(self) -> h5py.File:
        return open_read(self.run_path, KIND_RUN)

    def _table(self, name: str) -> Dict[str, np.ndarray]:
        with self.open() as f:
            return read_table(f[name]) if name in f else {}

    def metrics(self) -> Dict[str, np.ndarray]:
        return self._table("metrics")

    def episodes(self) -> Dict[str, np.ndarray]:
        return self._table("episodes")

    def attrs(self) -> dict:
        with self.open() as f:
            return {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}

    def checkpoints(self) -> List[str]:
        return list_checkpoints(os.path.join(self.dir, "checkpoints"))

    def trajectory_files(self) -> List[str]:
        return sorted(glob.glob(os.path.join(self.dir, "trajectories", "actor-*.h5")))

    def summary(self, window: int = 500) -> dict:
        import json

        attrs = self.attrs()
        m = self.metrics()
        eps = self.episodes()
        groups = json.loads(attrs.get("groups", "[]")) if isinstance(attrs.get("groups"), str) else []
        last = lambda k, d=0: (m[k][-1].item() if k in m and len(m[k]) else d)
        out = {
            "run_dir": os.path.abspath(self.dir),
            "schema_version": int(attrs.get("schema_version", -1)),
            "env": attrs.get("env"), "algo": attrs.get("algo"),
            "env_steps": int(last("env_steps")), "updates": int(last("update")),
            "episodes": int(len(eps.get("length", []))), "wall_time_s": float(last("wall_time", 0.0)),
            "env_errors": int(last("env_errors")),
            "groups": {},
            "checkpoints": self.checkpoints(),
            "trajectory_files": {},
        }
        for g in groups:
            r = eps.get(f"return/{g}", np.zeros(0))
            r = r[np.isfinite(r)]  # league mode: an episode row has the return of its own group only
            if len(r):
                w = min(window, len(r))
                smooth = np.convolve(r, np.ones(w) / w, mode="valid")
                out["groups"][g] = {"return_first": float(r[:w].mean()), "return_last": float(r[-w:].mean()),
                                    "return_best": float(smooth.max()), "episodes": int(len(r))}
            else:
                out["groups"][g] = {"return_first": None, "return_last": None, "return_best": None, "episodes": 0}
        pool = self._table("league/pool")
        if pool:  # league mode (the table exists, possibly still empty)
            ratings = self._table("league/ratings")
            live = {}
            for mid, elo, mu, sg in zip(ratings.get("member", []), ratings.get("elo", []), ratings.get("mu", []),
                                        ratings.get("sigma", [])):
                if mid < 0:
                    live[int(mid)] = {"elo": float(elo), "ordinal": float(mu - 3 * sg)}
            out["league"] = {"pool": int(len(pool.get("member", []))), "ratings": live}
        if out["checkpoints"]:
            try:
                _, cattrs = load_checkpoint(out["checkpoints"][-1])
                out["discarded_episodes"] = max(int(cattrs.get("discarded_episodes", 0)),
                                                int(attrs.get("discarded_episodes", 0)))  # run.h5: the final stop's
            except StorageError as e:
                out["checkpoint_error"] = str(e)
        for p in self.trajectory_files():
            try:
                with open_read(p, KIND_TRAJ) as f:
                    out["trajectory_files"][p] = int(f["episodes/episode"].shape[0])
            except (StorageError, KeyError) as e:
                out["trajectory_files"][p] = f"unreadable: {e}"
        if "sps" in m and len(m["sps"]):
            out["sps_last"] = float(m["sps"][-1])
        # per-role phase timings: mean seconds per update (learner) / per unroll (actor)
        roles = {"learner": {"receive": "time/wait_unrolls", "update": "time/update", "allreduce": "time/allreduce",
                             "send": "time/send_weights"},
                 "actor": {"env_step": "time/actor_env", "inference": "time/actor_infer",
                           "receive": "time/actor_wait", "send": "time/actor_send", "collect": "time/collect"}}
        out["timings_mean_s"] = {role: {name: float(np.nanmean(m[k])) for name, k in keys.items() if k in m and len(m[k])}
                                 for role, keys in roles.items()}
        if "lag_mean" in m and len(m["lag_mean"]):
            out["lag"] = {"mean": float(np.nanmean(m["lag_mean"])),
                          "max": float(np.nanmax(m["lag_max"])) if "lag_max" in m else float(np.nanmax(m["lag_mean"]))}
        if "round" in m and len(m["round"]):  # gradient flow (NIGT): rounds and gradients per actor
            actors = sorted({k.split("/")[1] for k in m if k.startswith("grads/actor-")})
            out["rounds"] = {"rounds": int(m["round"][-1]) + 1,
                             "round_time_mean_s": float(np.nanmean(m["round_time"])),
                             "round_time_median_s": float(np.nanmedian(m["round_time"])),
                             "abandoned": int(np.nansum(m.get("grads/abandoned", np.zeros(0)))),
                             "accepted": {a: int(m[f"grads/{a}/accepted"][-1]) for a in actors},
                             "dropped": {a: int(m[f"grads/{a}/dropped"][-1]) for a in actors}}
        if "flops/train_total" in m and len(m["flops/train_total"]):  # value-based learners (QMIX / VDN / MAST)
            out["value"] = {"epsilon": float(m["epsilon"][-1]), "sparsity": float(m["sparsity"][-1]),
                            "train_flops": float(m["flops/train_total"][-1]),
                            "inference_flops_per_step": float(m["flops/inference_step"][-1]),
                            "replay_episodes": int(m["replay_episodes"][-1])}
        size = lambda paths: int(sum(os.path.getsize(p) for p in paths if os.path.exists(p)))
        out["file_sizes_bytes"] = {"run.h5": size([self.run_path]), "trajectories": size(self.trajectory_files()),
                                   "checkpoints": size(out["checkpoints"])}
        return out
