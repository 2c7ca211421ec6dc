"""The trajectory files of a run (``trajectories/actor-NNNNN.h5``) as files: finding them, checking that they keep their
own data inside the run directory, scanning their tables (what :mod:`hpcmarl.analysis.trajectories` reads episodes
through), and one virtual-dataset index over all actors (:func:`build_index`, :func:`open_index`).

Everything here only reads the actor files (read-only; SWMR when a writer still has them open), so it can
be used on a running job. A file being appended to is read as far as it is complete at opening time:
``/steps`` up to the common row count of its columns, ``/episodes`` up to the last episode whose steps
are all present.

``build_index`` writes one new file, ``<run>/trajectories/index.h5`` by default:

* ``/steps/<column>`` and ``/episodes/<column>``: HDF5 virtual datasets that concatenate the rows of every
  actor file in actor order (same paths as in the actor files; the sources are referenced by paths
  relative to the index file, so the run directory can be moved or copied);
* ``/steps/actor``, ``/episodes/actor`` (int32): the actor each row came from (the number in the file name);
* ``/episodes/global_start`` (int64): the row of the episode's first step in the concatenated ``/steps``
  (``/episodes/start`` keeps the row inside the actor's own file);
* root attributes ``kind`` (``hpcmarl.trajectory_index``), ``schema_version``, ``sources`` (JSON list of
  the relative file names), ``actors``, ``source_steps_rows``, ``source_episodes_rows`` (row counts at
  indexing time), ``groups`` and ``env`` (copied from the first actor file), ``created``.

Read an index with :func:`open_index` (it opens in SWMR mode, which is what lets HDF5 read virtual
sources that a writer still has open; a plain non-SWMR open of the index fails while they are).

Nothing outside the run directory is read through these files: an actor file that is a link leading out of the run
directory, or whose datasets keep their data elsewhere (virtual datasets, external raw storage, external links), is
refused, and so is an index whose sources (its ``sources`` attribute and the files its virtual datasets name) are not
actor files inside the run directory (:class:`StorageError`, one line).
"""
from __future__ import annotations

import glob
import json
import os
import re
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import h5py
import numpy as np

from hpcmarl.storage import KIND_TRAJ, SCHEMA_VERSION, StorageError, damaged, open_read
from hpcmarl.storage.files import check_inside, inside

KIND_INDEX = "hpcmarl.trajectory_index"
INDEX_NAME = "index.h5"
_ACTOR_RE = re.compile(r"^actor-(\d+)\.h5$")
_STEP_REQUIRED = ("env", "episode", "t", "policy_version")
_EP_REQUIRED = ("episode", "env", "start", "length", "policy_version_first", "policy_version_last")


# --------------------------------------------------------------------------------------------------
# actor files
# --------------------------------------------------------------------------------------------------
def actor_files(run_dir: str) -> List[Tuple[int, str]]:
    """``[(actor, path)]`` of ``<run_dir>/trajectories/actor-NNNNN.h5``, by actor number."""
    if not os.path.isdir(run_dir):
        raise StorageError(f"{run_dir}: no such run directory")
    tdir = os.path.join(run_dir, "trajectories")
    found = []
    for p in glob.glob(os.path.join(tdir, "actor-*.h5")):
        m = _ACTOR_RE.match(os.path.basename(p))
        if m:
            check_inside(p, run_dir)
            found.append((int(m.group(1)), p))
    if not found:
        raise StorageError(f"{run_dir}: no trajectory files (trajectories/actor-*.h5); "
                           "was the run made with output.trajectories: false?")
    return sorted(found)


@dataclass
class _Source:
    """What one actor file holds at the time it was opened."""
    actor: int
    path: str
    steps: Dict[str, h5py.Dataset]
    episodes: Dict[str, h5py.Dataset]
    n_steps: int
    n_episodes: int
    groups: Dict[str, List[str]]
    attrs: dict


def _datasets(group: h5py.Group) -> Dict[str, h5py.Dataset]:
    out: Dict[str, h5py.Dataset] = {}
    group.visititems(lambda n, o: out.__setitem__(n, o) if isinstance(o, h5py.Dataset) else None)
    return dict(sorted(out.items()))


def _scan(f: h5py.File, actor: int, path: str) -> _Source:
    try:
        if "steps" not in f or "episodes" not in f:
            raise StorageError(f"{path}: no /steps or /episodes group (not a complete trajectory file)")
        for table in ("steps", "episodes"):
            if not isinstance(f.get(table, getlink=True), h5py.HardLink):
                raise StorageError(f"{path}: /{table} is a link, not a group of this file; refused")
        steps, eps = _datasets(f["steps"]), _datasets(f["episodes"])
        for table, cols, req in (("steps", steps, _STEP_REQUIRED), ("episodes", eps, _EP_REQUIRED)):
            missing = [c for c in req if c not in cols]
            if missing:
                raise StorageError(f"{path}: /{table} lacks column(s) {', '.join(missing)} (not a trajectory file?)")
        n_steps = min(d.shape[0] for d in steps.values())
        n_raw = min(d.shape[0] for d in eps.values())
        start = eps["start"][:n_raw].astype(np.int64)
        length = eps["length"][:n_raw].astype(np.int64)
        ok = (start >= 0) & (start + length <= n_steps)
        n_eps = n_raw if ok.all() else int(np.argmin(ok))  # a live writer: episodes whose steps are all there
        attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
    except StorageError:
        raise
    except (OSError, RuntimeError, KeyError, ValueError) as e:
        raise damaged(path, e) from None
    groups: Dict[str, List[str]] = {}
    try:
        groups = {str(g): list(a) for g, a in json.loads(attrs.get("groups", "{}")).items()}
    except (TypeError, ValueError, AttributeError):
        groups = {}
    if not groups:  # derive from the columns: <g>/reward [n_g]
        for k, d in steps.items():
            if k.endswith("/reward"):
                g = k[: -len("/reward")]
                groups[g] = [f"{g}_{i}" for i in range(d.shape[1] if d.ndim > 1 else 1)]
    return _Source(actor, path, steps, eps, n_steps, n_eps, groups, attrs)


class _Opened:
    """Context manager: an actor file opened read-only and scanned."""

    def __init__(self, actor: int, path: str, swmr: bool = False):
        self.actor, self.path, self.swmr = actor, path, swmr
        self.f: Optional[h5py.File] = None

    def __enter__(self) -> _Source:
        self.f = open_read(self.path, KIND_TRAJ, swmr=self.swmr)
        try:
            return _scan(self.f, self.actor, self.path)
        except BaseException:
            self.f.close()
            raise

    def __exit__(self, *exc):
        if self.f is not None and self.f.id.valid:
            self.f.close()


def _read(path: str, ds: h5py.Dataset, lo: int, hi: int) -> np.ndarray:
    try:
        return ds[lo:hi]
    except (OSError, RuntimeError, ValueError) as e:
        raise damaged(path, e) from None


# --------------------------------------------------------------------------------------------------
# the virtual-dataset index
# --------------------------------------------------------------------------------------------------
def _fill(dtype: np.dtype):
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return np.nan
    if dtype.kind == "u":
        return np.iinfo(dtype).max
    if dtype.kind == "i":
        return -1
    return 0


def build_index(run_dir: str, out: Optional[str] = None) -> str:
    """Write an HDF5 virtual-dataset file over every actor trajectory file of ``run_dir`` (see the module
    docstring for its layout) and return its path. Default ``<run_dir>/trajectories/index.h5``; an
    existing index is replaced (written to a temporary name, then renamed). Only the rows present when it
    runs are indexed; rebuild it to see later ones. The actor files are only read."""
    files = actor_files(run_dir)
    out = out or os.path.join(run_dir, "trajectories", INDEX_NAME)
    out_dir = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(out_dir):
        raise StorageError(f"{out}: directory {out_dir} does not exist")

    layout: Dict[str, Dict[str, Tuple[tuple, np.dtype]]] = {}
    infos = []  # (actor, relpath, n_steps, n_episodes, starts, steps col sources)
    first_attrs: dict = {}
    groups: Dict[str, List[str]] = {}
    for actor, path in files:
        with _Opened(actor, path) as src:
            cols = {"steps": {k: (d.shape[1:], d.dtype) for k, d in src.steps.items()},
                    "episodes": {k: (d.shape[1:], d.dtype) for k, d in src.episodes.items()}}
            if not layout:
                layout, first_attrs, groups = cols, src.attrs, src.groups
            elif cols != layout:
                diff = sorted(set(layout["steps"].items()) ^ set(cols["steps"].items())
                              | set(layout["episodes"].items()) ^ set(cols["episodes"].items()))
                raise StorageError(f"{path}: columns differ from {files[0][1]} "
                                   f"({', '.join(str(d[0]) for d in diff[:4])}); "
                                   "cannot index files of different environments together")
            starts = _read(path, src.episodes["start"], 0, src.n_episodes).astype(np.int64)
            infos.append((actor, os.path.relpath(os.path.abspath(path), out_dir), src.n_steps, src.n_episodes, starts))

    tot = {"steps": sum(i[2] for i in infos), "episodes": sum(i[3] for i in infos)}
    offsets = np.cumsum([0] + [i[2] for i in infos])[:-1].astype(np.int64)
    tmp = os.path.join(out_dir, f".{os.path.basename(out)}.tmp{os.getpid()}")
    try:
        with h5py.File(tmp, "w", libver="latest") as g:
            for table in ("steps", "episodes"):
                for name, (shape, dtype) in layout[table].items():
                    full = f"{table}/{name}"
                    if tot[table] == 0:
                        g.create_dataset(full, (0,) + shape, dtype=dtype)
                        continue
                    vl = h5py.VirtualLayout(shape=(tot[table],) + shape, dtype=dtype)
                    row = 0
                    for actor, rel, n_steps, n_eps, _ in infos:
                        n = n_steps if table == "steps" else n_eps
                        if n:
                            vs = h5py.VirtualSource(rel, full, shape=(n,) + shape, dtype=dtype)
                            vl[row:row + n] = vs
                        row += n
                    g.create_virtual_dataset(full, vl, fillvalue=_fill(dtype))
            actor_steps = np.concatenate([np.full(i[2], i[0], np.int32) for i in infos])
            actor_eps = np.concatenate([np.full(i[3], i[0], np.int32) for i in infos])
            gstart = np.concatenate([i[4] + off for i, off in zip(infos, offsets)]).astype(np.int64)
            for name, arr in (("steps/actor", actor_steps), ("episodes/actor", actor_eps),
                              ("episodes/global_start", gstart)):
                g.create_dataset(name, data=arr, chunks=(min(max(len(arr), 1), 65536),) if len(arr) else None,
                                 compression="lzf" if len(arr) else None)
            g.attrs["kind"] = KIND_INDEX
            g.attrs["schema_version"] = SCHEMA_VERSION
            g.attrs["sources"] = json.dumps([i[1] for i in infos])
            g.attrs["actors"] = np.asarray([i[0] for i in infos], np.int64)
            g.attrs["source_steps_rows"] = np.asarray([i[2] for i in infos], np.int64)
            g.attrs["source_episodes_rows"] = np.asarray([i[3] for i in infos], np.int64)
            g.attrs["source_steps_offsets"] = offsets
            g.attrs["groups"] = json.dumps(groups)
            g.attrs["env"] = str(first_attrs.get("env", ""))
            g.attrs["created"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return out


def _index_sources(f: h5py.File, path: str, run_dir: str) -> List[str]:
    """The actor files an index reads (its ``sources`` and every file its virtual datasets name), each checked to be
    an ``actor-NNNNN.h5`` inside ``run_dir``; :class:`StorageError` (one line) for anything else."""
    base = os.path.dirname(os.path.abspath(path))
    try:
        sources = json.loads(f.attrs.get("sources", "[]"))
    except (TypeError, ValueError):
        raise StorageError(f"{path}: damaged 'sources' attribute") from None
    if not isinstance(sources, list) or not all(isinstance(r, str) for r in sources):
        raise StorageError(f"{path}: damaged 'sources' attribute (not a list of file names)")

    def check(rel: str) -> str:
        src = os.path.normpath(os.path.join(base, rel))
        if os.path.isabs(rel) or not _ACTOR_RE.match(os.path.basename(src)) or not inside(src, run_dir):
            raise StorageError(f"{path}: source {rel!r} is not an actor trajectory file inside the run directory "
                               f"{run_dir}; refused")
        return src

    out = [check(r) for r in sources]
    virtual: List[h5py.Dataset] = []  # external links and storage: refused by open_read already
    f.visititems(lambda name, obj: virtual.append(obj) if isinstance(obj, h5py.Dataset) and obj.is_virtual else None)
    listed = set(out)
    for d in virtual:
        for vs in d.virtual_sources():
            if vs.file_name != "." and check(vs.file_name) not in listed:
                raise StorageError(f"{path}: {d.name} reads {vs.file_name!r}, which its 'sources' do not list; "
                                   f"refused")
    return out


def open_index(path: str, run_dir: Optional[str] = None) -> h5py.File:
    """Open an index file (or ``<run_dir>/trajectories/index.h5`` when given a run directory) read-only
    in SWMR mode, after checking that it is an index of this schema and that its sources are readable actor files
    inside the run directory: ``run_dir``, else the directory above the index's ``trajectories/`` directory (an index
    written elsewhere with ``-o``: pass ``run_dir``)."""
    if os.path.isdir(path):
        run_dir = run_dir or path
        path = os.path.join(path, "trajectories", INDEX_NAME)
    if run_dir is None:
        base = os.path.dirname(os.path.abspath(path))
        run_dir = os.path.dirname(base) if os.path.basename(base) == "trajectories" else base
    with open_read(path, KIND_INDEX, virtual=True):
        pass
    f = open_read(path, KIND_INDEX, swmr=True, virtual=True)
    try:
        sources = _index_sources(f, path, run_dir)
    except StorageError:
        f.close()
        raise
    except (OSError, RuntimeError, KeyError, ValueError) as e:
        f.close()
        raise damaged(path, e) from None
    for src in sources:
        try:
            open_read(src, KIND_TRAJ).close()
        except StorageError as e:
            f.close()
            raise StorageError(f"{path}: source {e}") from None
    return f

