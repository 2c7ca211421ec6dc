"""Follow a run while it trains (or look at a finished one): ``hpcmarl watch RUN_DIR``.

Each refresh opens ``run.h5`` and the trajectory files read-only (SWMR-read while the writer has them
open), reads only what the summary needs (the last ``/metrics`` row, the last episodes' returns, row
counts) and closes them again before sleeping, so a watcher never holds a lock that would stop the
run from being resumed and never writes to the run's files. The optional learning-curve PNG is
written to a temporary name and renamed, so a viewer never sees half a file.
"""
from __future__ import annotations

import os
import sys
import time
from typing import Dict, List, Optional, TextIO

import h5py
import numpy as np

from hpcmarl.analysis.trajectory_index import actor_files
from hpcmarl.storage import KIND_RUN, KIND_TRAJ, StorageError, open_read
from hpcmarl.storage.files import check_read

# last values shown on the "last:" line (per-group ones are expanded for each group)
_GROUP_METRICS = ("entropy", "approx_kl")
_METRICS = ("episode_length", "grad_norm", "lag_mean")


def _rows(ds: Dict[str, h5py.Dataset]) -> int:
    return min((d.shape[0] for d in ds.values()), default=0)


def _datasets(g: h5py.Group) -> Dict[str, h5py.Dataset]:
    out: Dict[str, h5py.Dataset] = {}
    g.visititems(lambda n, o: out.__setitem__(n, o) if isinstance(o, h5py.Dataset) else None)
    return out


def _fmt(v) -> str:
    if v is None:
        return "-"
    v = float(v)
    if not np.isfinite(v):
        return "nan"
    if v == int(v) and abs(v) < 1e12:
        return f"{int(v):,}"
    a = abs(v)
    return f"{v:.3g}" if a < 1e-2 or a >= 1e5 else f"{v:.4g}" if a < 10 else f"{v:.2f}"


def read_snapshot(run_dir: str, window: int = 100, curve: bool = False) -> dict:
    """One read of ``run.h5`` (opened and closed here): last metrics row, returns over the last
    ``window`` episodes, episode count; with ``curve`` also ``env_steps`` and returns of every episode."""
    path = os.path.join(run_dir, "run.h5")
    snap: dict = {"path": path, "metrics": {}, "groups": [], "episodes": 0, "window": {}, "curve": None}
    f = open_read(path, KIND_RUN, root=run_dir)
    try:
        mg = f.get("metrics")
        m = _datasets(mg) if isinstance(mg, h5py.Group) else {}
        n = _rows(m)
        if n:
            last = n - 1
            # a SWMR reader can see a row whose values are not flushed yet (fill value NaN): step back
            if "update" in m:
                tail = m["update"][max(0, n - 8):n]
                ok = np.flatnonzero(np.isfinite(tail))
                last = max(0, n - 8) + int(ok[-1]) if len(ok) else last
            snap["metrics"] = {k: float(d[last]) for k, d in m.items()}
        snap["metric_rows"] = n
        eg = f.get("episodes")
        e = _datasets(eg) if isinstance(eg, h5py.Group) else {}
        ne = _rows(e)
        snap["episodes"] = ne
        groups = sorted(k.split("/", 1)[1] for k in e if k.startswith("return/"))
        snap["groups"] = groups
        for g in groups:
            r = e[f"return/{g}"][max(0, ne - window):ne]
            r = r[np.isfinite(r)]
            snap["window"][g] = (float(r.mean()) if len(r) else None, int(len(r)))
        if curve and ne and "env_steps" in e:
            cols = ["env_steps"] + [f"return/{g}" for g in groups]
            check_read(path, f"/episodes ({ne:,} rows)", [e[k] for k in cols], ne)
            snap["curve"] = {"env_steps": e["env_steps"][:ne].astype(np.float64),
                             **{g: e[f"return/{g}"][:ne].astype(np.float64) for g in groups}}
    except (OSError, RuntimeError, KeyError, ValueError) as ex:
        raise StorageError(f"{path}: cannot be read (truncated or damaged?): "
                           f"{str(ex).splitlines()[0] if str(ex) else type(ex).__name__}") from None
    finally:
        f.close()
    return snap


def trajectory_counts(run_dir: str) -> Dict[str, object]:
    """``{actor file name: recorded episodes}`` (or a short error text for a file that cannot be read now)."""
    out: Dict[str, object] = {}
    try:
        files = actor_files(run_dir)
    except StorageError:
        return out
    for _, p in files:
        try:
            with open_read(p, KIND_TRAJ) as f:
                d = _datasets(f["episodes"]) if "episodes" in f else {}
                out[os.path.basename(p)] = _rows(d)
        except (StorageError, OSError, KeyError) as e:
            out[os.path.basename(p)] = "unreadable: " + str(e).split(": ", 1)[-1][:60]
    return out


def format_summary(run_dir: str, snap: dict, trajs: Dict[str, object], window: int) -> List[str]:
    m = snap["metrics"]
    stamp = time.strftime("%H:%M:%S")
    if m:
        head = (f"[watch {stamp}] {run_dir}  update {_fmt(m.get('update'))}  env_steps {_fmt(m.get('env_steps'))}  "
                f"sps {_fmt(m.get('sps'))}  episodes {_fmt(m.get('episodes', snap['episodes']))}  "
                f"wall {_fmt(m.get('wall_time'))}s")
    else:
        head = f"[watch {stamp}] {run_dir}  update 0  (no update logged yet)  episodes {snap['episodes']:,}"
    lines = [head]
    if snap["groups"]:
        parts = []
        for g in snap["groups"]:
            mean, n = snap["window"].get(g, (None, 0))
            parts.append(f"{g} {_fmt(mean)}")
        n = max((v[1] for v in snap["window"].values()), default=0)
        lines.append(f"  return (last {n} episodes): " + "  ".join(parts))
    if m:
        keys = [f"{g}/{k}" for g in snap["groups"] for k in _GROUP_METRICS] + list(_METRICS)
        shown = [f"{k} {_fmt(m[k])}" for k in keys if k in m]
        if shown:
            lines.append("  last: " + "  ".join(shown))
    if trajs:
        lines.append("  trajectories: " + "  ".join(
            f"{os.path.splitext(k)[0]} {v if isinstance(v, str) else format(v, ',') + ' episodes'}"
            for k, v in trajs.items()))
    return lines


def render_plot(path: str, run_dir: str, curve: Optional[dict], window: int = 100) -> None:
    """Return vs env steps (every episode faint, a moving average on top) to ``path``, atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    if curve:
        x = curve["env_steps"]
        for g, y in curve.items():
            if g == "env_steps":
                continue
            (line,) = ax.plot(x, y, lw=0.5, alpha=0.25)
            w = max(1, min(window, len(y) // 5 or 1))
            if len(y) >= w > 1:
                smooth = np.convolve(y, np.ones(w) / w, mode="valid")
                ax.plot(x[w - 1:], smooth, lw=1.8, color=line.get_color(), label=f"{g} (mean of {w})")
            else:
                line.set_label(g)
                line.set_alpha(1.0)
        ax.legend(loc="best", fontsize=8)
    else:
        ax.text(0.5, 0.5, "no episodes yet", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("env steps")
    ax.set_ylabel("episode return")
    ax.set_title(f"{os.path.basename(os.path.abspath(run_dir))}  ({time.strftime('%H:%M:%S')})", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    d = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(d, f".{os.path.basename(path)}.tmp{os.getpid()}.png")
    try:
        fig.savefig(tmp, format="png")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _transient(e: StorageError, path: str) -> bool:
    """Errors that a run which is starting up produces: the file is still being created."""
    msg = str(e)
    if "no such file" in msg or "not readable yet" in msg:
        return True
    try:
        return os.path.getsize(path) == 0 or "not an HDF5 file" in msg and os.path.getsize(path) < 4096
    except OSError:
        return True


def watch(run_dir: str, interval: float = 5.0, count: int = 0, plot: Optional[str] = None,
          out: TextIO = sys.stdout, window: int = 100) -> int:
    """Print a summary of ``run_dir`` every ``interval`` seconds, ``count`` times (0: until Ctrl-C);
    with ``plot``, also re-render a learning-curve PNG there each time. Returns the refreshes done (a
    refresh that only found that ``run.h5`` does not exist, or is not readable yet, counts too).

    Raises :class:`StorageError` for a ``run.h5`` that is not an hpcmarl run file, has another schema
    version or is damaged; a missing or still-being-created one is waited for."""
    run_path = os.path.join(run_dir, "run.h5")
    done = 0
    try:
        while count <= 0 or done < count:
            if done:
                time.sleep(interval)
            try:
                snap = read_snapshot(run_dir, window=window, curve=plot is not None)
            except StorageError as e:
                if not _transient(e, run_path):
                    raise
                why = "does not exist yet" if not os.path.exists(run_path) else "is not readable yet (run starting)"
                print(f"[watch {time.strftime('%H:%M:%S')}] waiting: {run_path} {why}", file=out, flush=True)
                done += 1
                continue
            lines = format_summary(run_dir, snap, trajectory_counts(run_dir), window)
            print("\n".join(lines), file=out, flush=True)
            if plot is not None:
                render_plot(plot, run_dir, snap["curve"], window)
            done += 1
    except KeyboardInterrupt:
        pass
    return done
