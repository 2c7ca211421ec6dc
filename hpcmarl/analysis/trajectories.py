"""Trajectory files of a run (``trajectories/actor-NNNNN.h5``): one virtual-dataset index over all actors,
a lazy per-episode iterator and per-agent statistics.

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
from dataclasses import dataclass, field
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import h5py
import numpy as np

from hpcmarl.storage import KIND_TRAJ, SCHEMA_VERSION, StorageError, damaged, open_read

KIND_INDEX = "hpcmarl.trajectory_index"
INDEX_NAME = "index.h5"
_ACTOR_RE = re.compile(r"^actor-(\d+)\.h5$")
_STEP_REQUIRED = ("env", "episode", "t", "policy_version")
_EP_REQUIRED = ("episode", "env", "start", "length", "policy_version_first", "policy_version_last")
_BLOCK_ROWS = 1 << 16  # steps rows read at once by the iterator and the statistics


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
            if not inside(p, run_dir):
                raise StorageError(f"{p}: leads to {os.path.realpath(p)}, outside the run directory {run_dir} "
                                   f"(refused: trajectory files are read inside the run directory only)")
            found.append((int(m.group(1)), p))
    if not found:
        raise StorageError(f"{run_dir}: no trajectory files (trajectories/actor-*.h5); "
                           "was the run made with output.trajectories: false?")
    return sorted(found)


def inside(path: str, root: str) -> bool:
    """``path`` (links resolved) is ``root`` or lies under it (links resolved)."""
    r, p = os.path.realpath(root), os.path.realpath(path)
    return p == r or p.startswith(r.rstrip(os.sep) + os.sep)


def local_data(path: str, group: h5py.Group, where: str = "") -> None:
    """Raise :class:`StorageError` when ``group`` (of the file ``path``) holds data that lives in another file: an
    external link, a virtual dataset or a dataset with external raw storage (which could name any file)."""
    bad: List[str] = []

    def visit(name, link):
        if isinstance(link, h5py.ExternalLink):
            bad.append(f"{where}{name} (an external link to {link.filename})")

    group.visititems_links(visit)

    def data(name, obj):
        if isinstance(obj, h5py.Dataset) and (obj.is_virtual or obj.external):
            files = [v.file_name for v in obj.virtual_sources()] if obj.is_virtual else [e[0] for e in obj.external]
            bad.append(f"{where}{name} (data in {', '.join(sorted(set(map(str, files))))})")

    group.visititems(data)
    if bad:
        raise StorageError(f"{path}: {bad[0]} keeps its data in another file; refused (an hpcmarl trajectory file "
                           f"holds its own data)")


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
            local_data(path, f[table], f"/{table}/")
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


def _episode_table(src: _Source) -> Dict[str, np.ndarray]:
    return {k: _read(src.path, d, 0, src.n_episodes) for k, d in src.episodes.items()}


def _blocks(src: _Source, eps: Dict[str, np.ndarray], sel: np.ndarray, columns: Sequence[str],
            block_rows: int = _BLOCK_ROWS) -> Iterator[Tuple[int, Dict[str, np.ndarray], np.ndarray]]:
    """Read the ``/steps`` rows of the selected episodes (indices ``sel`` into ``eps``) a block at a time:
    yields ``(first_row, {column: rows}, episode indices in this block)``."""
    start, length = eps["start"].astype(np.int64), eps["length"].astype(np.int64)
    order = sel[np.argsort(start[sel], kind="stable")]
    i = 0
    while i < len(order):
        lo, hi, j = int(start[order[i]]), int(start[order[i]] + length[order[i]]), i + 1
        while j < len(order) and max(hi, int(start[order[j]] + length[order[j]])) - lo <= block_rows:
            hi = max(hi, int(start[order[j]] + length[order[j]]))
            j += 1
        data = {c: _read(src.path, src.steps[c], lo, hi) for c in columns}
        yield lo, data, order[i:j]
        i = j


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
                raise StorageError(f"{path}: columns differ from {files[0][1]} ({', '.join(str(d[0]) for d in diff[:4])}); "
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
    bad: List[str] = []
    virtual: List[h5py.Dataset] = []

    def link(name, lk):
        if isinstance(lk, h5py.ExternalLink):
            bad.append(f"{name} (an external link to {lk.filename})")

    def dataset(name, obj):
        if isinstance(obj, h5py.Dataset) and obj.is_virtual:
            virtual.append(obj)
        elif isinstance(obj, h5py.Dataset) and obj.external:
            bad.append(f"{name} (external storage in {obj.external[0][0]})")

    f.visititems_links(link)
    f.visititems(dataset)
    if bad:
        raise StorageError(f"{path}: {bad[0]} keeps its data outside the index and its sources; refused")
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
    with open_read(path, KIND_INDEX):
        pass
    f = open_read(path, KIND_INDEX, swmr=True)
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


# --------------------------------------------------------------------------------------------------
# episodes
# --------------------------------------------------------------------------------------------------
@dataclass
class Episode:
    actor: int
    episode: int
    env: int
    length: int
    policy_version_first: int
    policy_version_last: int
    returns: Dict[str, float]
    data: Dict[str, np.ndarray] = field(repr=False)
    start: int = 0  # row of the first step in the actor's file


VersionFilter = Union[None, int, Tuple[Optional[int], Optional[int]]]


def _version_mask(first: np.ndarray, last: np.ndarray, policy_version: VersionFilter) -> np.ndarray:
    if policy_version is None:
        return np.ones(len(first), bool)
    if isinstance(policy_version, (tuple, list)):
        if len(policy_version) != 2:
            raise ValueError(f"policy_version: a version or a (lo, hi) pair, got {policy_version!r}")
        lo, hi = policy_version
        lo = -np.inf if lo is None else lo
        hi = np.inf if hi is None else hi
        return (first <= hi) & (last >= lo)
    v = int(policy_version)
    return (first <= v) & (last >= v)


def _actor_set(actor) -> Optional[set]:
    if actor is None:
        return None
    if isinstance(actor, (int, np.integer)):
        return {int(actor)}
    return {int(a) for a in actor}


def iter_episodes(run_dir: str, actor: Union[None, int, Iterable[int]] = None, policy_version: VersionFilter = None,
                  groups: Union[None, str, Iterable[str]] = None) -> Iterator[Episode]:
    """Yield the recorded episodes of a run as :class:`Episode` objects, actor file by actor file (each
    file is opened read-only while its episodes are being yielded and read a block of rows at a time).

    ``actor``: an actor number or several; ``policy_version``: a version ``v`` keeps the episodes played
    (at least partly) with it (``first <= v <= last``), a pair ``(lo, hi)`` those whose versions overlap
    ``[lo, hi]`` (either end may be None); ``groups``: only these groups' columns and returns in ``data``
    and ``returns`` (``env``, ``episode``, ``t``, ``policy_version`` are always there).
    Problems with the files raise :class:`StorageError` (the directory is checked at the call)."""
    files = actor_files(run_dir)
    want = _actor_set(actor)
    if want is not None:
        files = [(a, p) for a, p in files if a in want]
    if policy_version is not None:
        _version_mask(np.zeros(0), np.zeros(0), policy_version)  # validate now
    gsel = [groups] if isinstance(groups, str) else (list(groups) if groups is not None else None)
    return _iter(files, policy_version, gsel)


def _iter(files, policy_version, gsel) -> Iterator[Episode]:
    for actor, path in files:
        with _Opened(actor, path) as src:
            if gsel is not None:
                unknown = [g for g in gsel if g not in src.groups]
                if unknown:
                    raise ValueError(f"unknown group(s) {unknown}; {path} has {sorted(src.groups)}")
            glist = list(src.groups) if gsel is None else gsel
            eps = _episode_table(src)
            if not src.n_episodes:
                continue
            mask = _version_mask(eps["policy_version_first"], eps["policy_version_last"], policy_version)
            columns = [c for c in src.steps if "/" not in c or c.split("/")[0] in glist]
            rets = {g: eps[f"return/{g}"] for g in glist if f"return/{g}" in eps}
            for lo, data, idx in _blocks(src, eps, np.flatnonzero(mask), columns):
                for e in idx:
                    s, n = int(eps["start"][e]) - lo, int(eps["length"][e])
                    yield Episode(actor=actor, episode=int(eps["episode"][e]), env=int(eps["env"][e]), length=n,
                                  policy_version_first=int(eps["policy_version_first"][e]),
                                  policy_version_last=int(eps["policy_version_last"][e]),
                                  returns={g: float(r[e]) for g, r in rets.items()},
                                  data={c: v[s:s + n] for c, v in data.items()}, start=int(eps["start"][e]))


class Trajectories:
    """The trajectory files of one run directory."""

    def __init__(self, run_dir: str):
        self.run_dir = run_dir
        self.files: Dict[int, str] = dict(actor_files(run_dir))

    @property
    def actors(self) -> List[int]:
        return sorted(self.files)

    @property
    def groups(self) -> Dict[str, List[str]]:
        """``{group: [agent names]}`` from the first actor file."""
        a = self.actors[0]
        with _Opened(a, self.files[a]) as src:
            return src.groups

    def episodes(self, actor=None, policy_version: VersionFilter = None, groups=None) -> Iterator[Episode]:
        return iter_episodes(self.run_dir, actor=actor, policy_version=policy_version, groups=groups)

    __iter__ = episodes

    def episode_table(self) -> Dict[str, np.ndarray]:
        """All ``/episodes`` columns of all actors, concatenated, plus ``actor``."""
        parts = []
        for a in self.actors:
            with _Opened(a, self.files[a]) as src:
                t = _episode_table(src)
                t["actor"] = np.full(src.n_episodes, a, np.int32)
                parts.append(t)
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def stats(self) -> dict:
        return agent_stats(self.run_dir)

    def build_index(self, out: Optional[str] = None) -> str:
        return build_index(self.run_dir, out)


# --------------------------------------------------------------------------------------------------
# per-agent statistics
# --------------------------------------------------------------------------------------------------
def _mean_std(x: List[float]) -> Tuple[Optional[float], Optional[float]]:
    if not len(x):
        return None, None
    a = np.asarray(x, np.float64)
    return float(a.mean()), float(a.std())


def agent_stats(run_dir: str) -> dict:
    """Per group and per agent statistics over every recorded episode of every actor file.

    ``{"run_dir", "actors", "episodes", "groups": {g: {"agents": [names], "episodes", "length_mean",
    "return_mean", "return_std", "per_agent": {name: {...}}}}}`` where per agent:

    * ``episodes``: episodes in which the agent was alive at least one step (the others are left out
      of its numbers);
    * ``return_mean``/``return_std`` (population std): the agent's reward summed over the episode;
    * ``length_mean``: episode length (steps); ``alive_steps_mean``: steps the agent was alive;
    * ``actions``: over the steps it was alive: discrete ``{"kind": "discrete", "counts": {id: n}}``,
      several discrete dimensions ``{"kind": "multi_discrete", "counts": [{id: n}, ...]}``, continuous
      ``{"kind": "continuous", "mean": [...], "std": [...]}`` per action dimension.

    The group's ``return_*`` are over the group's summed reward per episode (``/episodes/return/<g>``)."""
    files = actor_files(run_dir)
    acc: Dict[str, dict] = {}
    names: Dict[str, List[str]] = {}
    n_total = 0
    for actor, path in files:
        with _Opened(actor, path) as src:
            if not names:
                names = src.groups
            eps = _episode_table(src)
            n_total += src.n_episodes
            if not src.n_episodes:
                continue
            for g, agents in src.groups.items():
                if f"{g}/reward" not in src.steps:
                    continue
                a = acc.setdefault(g, {"lengths": [], "returns": [], "agents": {}})
                cols = [f"{g}/reward", f"{g}/alive", f"{g}/action"]
                cols = [c for c in cols if c in src.steps]
                for lo, data, idx in _blocks(src, eps, np.arange(src.n_episodes), cols):
                    rew = data[f"{g}/reward"].astype(np.float64)
                    n_ag = rew.shape[1]
                    alive = data[f"{g}/alive"].astype(bool) if f"{g}/alive" in data else np.ones(rew.shape, bool)
                    cs_r = np.concatenate([np.zeros((1, n_ag)), np.cumsum(rew, axis=0)])
                    cs_a = np.concatenate([np.zeros((1, n_ag), np.int64), np.cumsum(alive, axis=0)])
                    s = eps["start"][idx].astype(np.int64) - lo
                    e = s + eps["length"][idx].astype(np.int64)
                    ep_ret = cs_r[e] - cs_r[s]           # [episodes, n_agents]
                    ep_alive = cs_a[e] - cs_a[s]
                    lens = eps["length"][idx].astype(np.int64)
                    a["lengths"].extend(lens.tolist())
                    a["returns"].extend(ep_ret.sum(axis=1).tolist())
                    act = data.get(f"{g}/action")
                    # rows that belong to the episodes of this block (not rows of episodes filtered out)
                    in_ep = np.zeros(rew.shape[0], bool)
                    for s0, e0 in zip(s, e):
                        in_ep[s0:e0] = True
                    for j in range(n_ag):
                        name = agents[j] if j < len(agents) else f"{g}_{j}"
                        ag = a["agents"].setdefault(name, {"returns": [], "lengths": [], "alive": [],
                                                           "counts": None, "sum": None, "sumsq": None, "n": 0,
                                                           "kind": None})
                        live = ep_alive[:, j] > 0
                        ag["returns"].extend(ep_ret[live, j].tolist())
                        ag["lengths"].extend(lens[live].tolist())
                        ag["alive"].extend(ep_alive[live, j].tolist())
                        if act is None:
                            continue
                        rows = in_ep & alive[:, j]
                        x = act[rows, j]
                        if np.dtype(act.dtype).kind in "iu":
                            x = x.reshape(len(x), -1)
                            ag["kind"] = "discrete" if act.ndim == 2 else "multi_discrete"
                            if ag["counts"] is None:
                                ag["counts"] = [dict() for _ in range(x.shape[1])]
                            for d in range(x.shape[1]):
                                ids, cnt = np.unique(x[:, d], return_counts=True)
                                for i_, c_ in zip(ids.tolist(), cnt.tolist()):
                                    ag["counts"][d][i_] = ag["counts"][d].get(i_, 0) + c_
                        else:
                            x = x.reshape(len(x), -1).astype(np.float64)
                            ag["kind"] = "continuous"
                            if ag["sum"] is None:
                                ag["sum"], ag["sumsq"] = np.zeros(x.shape[1]), np.zeros(x.shape[1])
                            ag["sum"] += x.sum(axis=0)
                            ag["sumsq"] += (x * x).sum(axis=0)
                            ag["n"] += len(x)

    out = {"run_dir": os.path.abspath(run_dir), "actors": [a for a, _ in files], "episodes": n_total, "groups": {}}
    for g, agents in names.items():
        a = acc.get(g, {"lengths": [], "returns": [], "agents": {}})
        rm, rs = _mean_std(a["returns"])
        gout = {"agents": list(agents), "episodes": len(a["lengths"]),
                "length_mean": _mean_std(a["lengths"])[0], "return_mean": rm, "return_std": rs, "per_agent": {}}
        for name in agents:
            ag = a["agents"].get(name)
            if ag is None:
                gout["per_agent"][name] = {"episodes": 0, "return_mean": None, "return_std": None,
                                           "length_mean": None, "alive_steps_mean": None, "actions": None}
                continue
            m, s = _mean_std(ag["returns"])
            if ag["kind"] == "discrete":
                actions = {"kind": "discrete", "counts": dict(sorted(ag["counts"][0].items()))}
            elif ag["kind"] == "multi_discrete":
                actions = {"kind": "multi_discrete", "counts": [dict(sorted(c.items())) for c in ag["counts"]]}
            elif ag["kind"] == "continuous" and ag["n"]:
                mean = ag["sum"] / ag["n"]
                std = np.sqrt(np.maximum(ag["sumsq"] / ag["n"] - mean * mean, 0.0))
                actions = {"kind": "continuous", "mean": mean.tolist(), "std": std.tolist()}
            else:
                actions = None
            gout["per_agent"][name] = {"episodes": len(ag["returns"]), "return_mean": m, "return_std": s,
                                       "length_mean": _mean_std(ag["lengths"])[0],
                                       "alive_steps_mean": _mean_std(ag["alive"])[0], "actions": actions}
        out["groups"][g] = gout
    return out
