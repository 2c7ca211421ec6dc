"""Export a run directory to plain formats: CSV (+ Parquet when pyarrow is there), per-actor NumPy
``.npz`` trajectory chunks, a marl-eval JSON file and (when the tensorboard package of the ``tracking`` extra is
installed) TensorBoard event files. (A run trained with ``output.loggers: [tensorboard]`` has them live in
``RUN/tensorboard`` already: :mod:`hpcmarl.tracking`.)

Everything here only reads the run: HDF5 files are opened read-only through
:func:`hpcmarl.storage.open_read` (SWMR, so a live run can be exported) and nothing is written inside
the run directory's own files. Bad input raises :class:`hpcmarl.storage.StorageError` with a one-line
message naming the path.

This module also holds the small reading helpers the other analysis tools share
(:func:`load_run`, :class:`RunData`; ``check_file`` lives in :mod:`hpcmarl.storage`).
"""
from __future__ import annotations

import csv
import json
import os
import re
from dataclasses import dataclass
from typing import Dict, List, Optional

import h5py
import numpy as np

from hpcmarl.analysis.marleval import env_family, marl_eval_data  # noqa: F401  (re-exported)
from hpcmarl.storage import KIND_TRAJ, Run, StorageError, check_file, open_read, read_table
from hpcmarl.storage.files import check_read
from hpcmarl.typedconfig import flatten_config


# --------------------------------------------------------------------------------------------------
# shared reading helpers
# --------------------------------------------------------------------------------------------------
def _first_line(e: BaseException) -> str:
    s = str(e)
    return s.splitlines()[0] if s else type(e).__name__


def _decode(v):
    return v.decode() if isinstance(v, bytes) else v


@dataclass
class RunData:
    """Everything the analysis tools need from one run directory, read once."""

    dir: str
    run_path: str
    attrs: dict
    metrics: Dict[str, np.ndarray]
    episodes: Dict[str, np.ndarray]
    config: dict
    groups: List[str]
    league: Optional[Dict[str, np.ndarray]] = None
    label: str = ""
    eval: Optional[Dict[str, np.ndarray]] = None  # /eval: one row per evaluation (None: the run has none)
    eval_episodes: Optional[Dict[str, np.ndarray]] = None  # /eval_episodes: one row per evaluation episode

    @property
    def flat_config(self) -> Dict[str, object]:
        return flatten_config(self.config)


def load_run(run_dir: str) -> RunData:
    """Read ``run.h5`` of ``run_dir`` (attributes, /metrics, /episodes; /league, /eval, /eval_episodes when present).

    Raises :class:`StorageError` naming the path for a missing directory or file, a non-HDF5 file,
    another kind or schema version, and a truncated or damaged file.
    """
    run = Run(run_dir)
    check_file(run.run_path)
    try:
        with run.open() as f:
            attrs = {k: _decode(v) for k, v in f.attrs.items()}
            metrics = read_table(f["metrics"]) if isinstance(f.get("metrics"), h5py.Group) else {}
            episodes = read_table(f["episodes"]) if isinstance(f.get("episodes"), h5py.Group) else {}
            if isinstance(f.get("league/ratings"), h5py.Group):  # league mode: the ratings over time
                league = read_table(f["league/ratings"])
            else:
                league = read_table(f["league"]) if isinstance(f.get("league"), h5py.Group) else None
            ev, ev_eps = (read_table(f[k]) if isinstance(f.get(k), h5py.Group) else None
                          for k in ("eval", "eval_episodes"))
    except StorageError:
        raise
    except Exception as e:  # h5py raises OSError/KeyError/RuntimeError/ValueError on damaged files
        raise StorageError(f"{run.run_path}: cannot be read (truncated or damaged?): {_first_line(e)}") from None
    config = {}
    text = attrs.get("config")
    src = run.run_path
    if not text and os.path.exists(os.path.join(run_dir, "config.yaml")):
        src = os.path.join(run_dir, "config.yaml")
        with open(src) as fh:
            text = fh.read()
    if text:
        from hpcmarl.typedconfig import safe_yaml

        config = safe_yaml(text, f"{src}: its config", StorageError) or {}
        if not isinstance(config, dict):
            config = {}
    try:
        groups = json.loads(attrs["groups"]) if isinstance(attrs.get("groups"), str) else []
    except ValueError:
        groups = []
    if not groups:
        groups = sorted(k.split("/", 1)[1] for k in episodes if k.startswith("return/"))
    return RunData(dir=run_dir, run_path=run.run_path, attrs=attrs, metrics=metrics, episodes=episodes,
                   config=config, groups=list(groups), league=league,
                   eval=ev, eval_episodes=ev_eps, label=os.path.basename(os.path.normpath(run_dir)) or run_dir)


# --------------------------------------------------------------------------------------------------
# tables: CSV / Parquet
# --------------------------------------------------------------------------------------------------
def _columns(table: Dict[str, np.ndarray]) -> List[tuple]:
    """(header name, 1-D column) in sorted dataset-name order; N-D datasets become name[i,j] columns."""
    cols = []
    for name in sorted(table):
        a = np.asarray(table[name])
        if a.ndim <= 1:
            cols.append((name, a.reshape(-1)))
        else:
            flat = a.reshape(a.shape[0], -1)
            for j, idx in enumerate(np.ndindex(*a.shape[1:])):
                cols.append((f"{name}[{','.join(map(str, idx))}]", flat[:, j]))
    return cols


def _cells(a: np.ndarray) -> List[str]:
    if a.dtype.kind == "f":
        return [repr(v) for v in a.astype(np.float64).tolist()]  # shortest text that round-trips
    if a.dtype.kind in "iub":
        return [str(int(v)) for v in a.tolist()]
    return [str(_decode(v)) for v in a.tolist()]


def write_csv(table: Dict[str, np.ndarray], path: str, block: int = 16384) -> int:
    """Header row + one row per table row, formatted ``block`` rows at a time; returns the number of data rows."""
    cols = _columns(table)
    n = min((len(c) for _, c in cols), default=0)
    tmp = path + ".tmp"
    with open(tmp, "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow([name for name, _ in cols])
        for lo in range(0, n if cols else 0, block):
            w.writerows(zip(*[_cells(c[lo:min(n, lo + block)]) for _, c in cols]))
    os.replace(tmp, path)
    return n


def _parquet(table: Dict[str, np.ndarray], path: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols = _columns(table)
    n = min((len(c) for _, c in cols), default=0)
    pq.write_table(pa.table({name: c[:n] for name, c in cols}), path)


# --------------------------------------------------------------------------------------------------
# trajectories -> npz
# --------------------------------------------------------------------------------------------------
def _actor_index(path: str, attrs) -> int:
    if "actor" in attrs:
        return int(attrs["actor"])
    m = re.search(r"actor-(\d+)\.h5$", path)
    return int(m.group(1)) if m else 0


def export_trajectories(traj_path: str, out_dir: str, chunk_episodes: int = 1000) -> dict:
    """One ``actor-AAAAA_epLLLLLL-HHHHHH.npz`` per ``chunk_episodes`` episode ids of one trajectory
    file (episode ids ``k*chunk .. (k+1)*chunk-1``; the last file may hold fewer). Keys are dataset
    paths with ``/`` replaced by ``__``: ``steps__…`` rows of those episodes and ``episodes__…`` rows."""
    check_file(traj_path)
    files, n_eps, n_steps = [], 0, 0
    try:
        with open_read(traj_path, KIND_TRAJ) as f:
            actor = _actor_index(traj_path, f.attrs)
            if "episodes" not in f or "steps" not in f:
                return {"files": [], "episodes": 0, "steps": 0}
            for table in ("steps", "episodes"):  # data kept in other files: refused by open_read already
                if not isinstance(f.get(table, getlink=True), h5py.HardLink):
                    raise StorageError(f"{traj_path}: /{table} is a link, not a group of this file; refused")
            eps = read_table(f["episodes"])
            sds: Dict[str, h5py.Dataset] = {}
            f["steps"].visititems(lambda n, o: sds.__setitem__(n, o) if isinstance(o, h5py.Dataset) else None)
            rows = min((d.shape[0] for d in sds.values()), default=0)
            if not eps or "episode" not in eps:
                return {"files": [], "episodes": 0, "steps": 0}
            ok = (eps["start"] + eps["length"]) <= rows  # a live writer appends steps before episodes
            eps = {k: v[ok] for k, v in eps.items()}
            ids = eps["episode"]
            for c in np.unique(ids // chunk_episodes):
                sel = (ids // chunk_episodes) == c
                part = {k: v[sel] for k, v in eps.items()}
                lo_row = int(part["start"].min())
                hi_row = int((part["start"] + part["length"]).max())
                check_read(traj_path, f"the steps of episodes {int(part['episode'].min())}.."
                           f"{int(part['episode'].max())} (rows {lo_row:,}..{hi_row:,}; export --chunk-episodes "
                           f"makes fewer per file)", sds.values(), hi_row - lo_row)
                steps = {k: d[lo_row:hi_row] for k, d in sds.items()}
                keep = np.isin(steps["episode"], part["episode"]) if "episode" in steps else slice(None)
                arrays = {"steps__" + k.replace("/", "__"): np.ascontiguousarray(v[keep]) for k, v in steps.items()}
                arrays.update({"episodes__" + k.replace("/", "__"): np.ascontiguousarray(v) for k, v in part.items()})
                lo, hi = int(c) * chunk_episodes, (int(c) + 1) * chunk_episodes - 1
                path = os.path.join(out_dir, f"actor-{actor:05d}_ep{lo:06d}-{hi:06d}.npz")
                tmp = path + ".tmp.npz"
                np.savez_compressed(tmp, **arrays)
                os.replace(tmp, path)
                files.append(path)
                n_eps += int(sel.sum())
                n_steps += int(part["length"].sum())
    except StorageError:
        raise
    except Exception as e:
        raise StorageError(f"{traj_path}: cannot be read (truncated or damaged?): {_first_line(e)}") from None
    return {"files": files, "episodes": n_eps, "steps": n_steps}


# --------------------------------------------------------------------------------------------------
# TensorBoard
# --------------------------------------------------------------------------------------------------
def _summary_writer():
    """``(SummaryWriter, None)``, or ``(None, why)`` when the tensorboard package (the tracking extra) is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package

        return SummaryWriter, None
    except ImportError as e:
        return None, f"the tensorboard package is not installed ({_first_line(e)}): pip install -e \".[tracking]\""


def _tensorboard(data: RunData, log_dir: str, SummaryWriter) -> List[str]:
    import datetime

    m = data.metrics
    t0 = 0.0
    try:
        t0 = datetime.datetime.strptime(str(data.attrs.get("start_time", "")), "%Y-%m-%dT%H:%M:%S%z").timestamp()
    except ValueError:
        pass
    n = min((len(v) for v in m.values()), default=0)
    steps = m["env_steps"] if "env_steps" in m else np.arange(n)
    wall = m["wall_time"] if "wall_time" in m else np.zeros(n)
    w = SummaryWriter(log_dir=log_dir)
    try:
        for name in sorted(m):
            col = m[name]
            if col.ndim != 1:
                continue
            for i in range(n):
                if np.isfinite(col[i]):
                    w.add_scalar(name, float(col[i]), global_step=int(steps[i]), walltime=t0 + float(wall[i]))
    finally:
        w.close()
    return sorted(os.path.join(log_dir, p) for p in os.listdir(log_dir))


# --------------------------------------------------------------------------------------------------
# export_run
# --------------------------------------------------------------------------------------------------
def export_run(run_dir: str, out_dir: str, trajectories: bool = True, chunk_episodes: int = 1000,
               marl_eval_points: int = 20) -> dict:
    """Export ``run_dir`` into ``out_dir`` (created; existing files of the same names are replaced).

    Writes ``metrics.csv`` and ``episodes.csv`` (one row per HDF5 row, columns in sorted dataset-name
    order, floats as Python ``repr``), ``metrics.parquet``/``episodes.parquet`` when pyarrow is
    importable, ``trajectories/actor-AAAAA_epLLLLLL-HHHHHH.npz`` (see :func:`export_trajectories`),
    ``marl_eval.json`` (see :func:`marl_eval_data`; ``marl_eval_points`` evaluation points) and
    ``tensorboard/`` event files (one scalar per /metrics column, step = env steps) when the tensorboard
    package is installed (``pip install -e ".[tracking]"``; else ``skipped["tensorboard"]`` says so). Returns what
    was written::

        {"out_dir", "files": [...], "rows": {"metrics": n, "episodes": n},
         "trajectories": {"files": [...], "episodes": n, "steps": n}, "marl_eval": {...},
         "parquet": [...], "tensorboard": [...], "skipped": {what: why}}
    """
    if chunk_episodes < 1:
        raise ValueError(f"chunk_episodes must be >= 1 (got {chunk_episodes})")
    data = load_run(run_dir)
    if os.path.realpath(out_dir) == os.path.realpath(run_dir):
        raise ValueError(f"{out_dir}: the export directory must not be the run directory itself")
    traj_files = Run(run_dir).trajectory_files() if trajectories else []
    for p in traj_files:  # fail before writing anything (links out of the run: refused by trajectory_files)
        check_file(p)
    os.makedirs(out_dir, exist_ok=True)
    result: dict = {"out_dir": os.path.abspath(out_dir), "files": [], "rows": {}, "parquet": [],
                    "tensorboard": [], "trajectories": {"files": [], "episodes": 0, "steps": 0}, "skipped": {}}
    for name, table in (("metrics", data.metrics), ("episodes", data.episodes)):
        path = os.path.join(out_dir, f"{name}.csv")
        result["rows"][name] = write_csv(table, path)
        result["files"].append(path)

    try:
        import pyarrow  # noqa: F401
        import pyarrow.parquet  # noqa: F401

        for name, table in (("metrics", data.metrics), ("episodes", data.episodes)):
            path = os.path.join(out_dir, f"{name}.parquet")
            _parquet(table, path)
            result["parquet"].append(path)
            result["files"].append(path)
    except ImportError as e:
        result["skipped"]["parquet"] = f"pyarrow is not importable ({_first_line(e)})"

    if not trajectories:
        result["skipped"]["trajectories"] = "not requested"
    elif not traj_files:
        result["skipped"]["trajectories"] = "the run has no trajectory files"
    else:
        tdir = os.path.join(out_dir, "trajectories")
        os.makedirs(tdir, exist_ok=True)
        for p in traj_files:
            r = export_trajectories(p, tdir, chunk_episodes)
            result["trajectories"]["files"] += r["files"]
            result["trajectories"]["episodes"] += r["episodes"]
            result["trajectories"]["steps"] += r["steps"]
        result["files"] += result["trajectories"]["files"]

    me = marl_eval_data(data, marl_eval_points)
    path = os.path.join(out_dir, "marl_eval.json")
    with open(path + ".tmp", "w") as fh:
        json.dump(me, fh, indent=1)
    os.replace(path + ".tmp", path)
    (family, tasks), = me.items()
    (task, algos), = tasks.items()
    (algo, seeds), = algos.items()
    (seed_key, points), = seeds.items()
    steps = [v for k, v in points.items() if k.startswith("step_")]
    result["marl_eval"] = {"path": path, "env": family, "task": task, "algo": algo, "seed": seed_key,
                           "steps": len(steps), "episodes": sum(len(v["return"]) for v in steps)}
    result["files"].append(path)

    SummaryWriter, why = _summary_writer()
    if SummaryWriter is None:
        result["skipped"]["tensorboard"] = why
    else:
        tb = _tensorboard(data, os.path.join(out_dir, "tensorboard"), SummaryWriter)
        result["tensorboard"] = tb
        result["files"] += tb
    return result
