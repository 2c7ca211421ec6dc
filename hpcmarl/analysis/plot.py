"""Plots of one or more runs (matplotlib, Agg backend; PNG or SVG by the output's extension).

* default: learning curves, mean episode return per policy group (one panel per group) against env
  steps or wall time, from ``/episodes``; runs whose configs are equal apart from the seed are drawn
  as their mean with a min–max band, other runs as one line each;
* ``metric=NAME``: a ``/metrics`` series against ``x`` (a name without its group prefix, e.g.
  ``entropy``, draws every ``<group>/entropy``);
* ``metric="lag"``: histogram of ``lag_mean`` (policy versions between the weights an unroll was made
  with and the learner's, per update);
* ``metric="league"``: ratings in the run's ``/league`` group over time;
* ``metric="exploitability"``: NashConv of the newest snapshot and of the uniform and meta-Nash pool mixtures
  (``/league/exploitability``, OpenSpiel games with ``league.exploitability_every``).

Read-only; bad input raises :class:`hpcmarl.storage.StorageError` naming the path.
"""
from __future__ import annotations

import json
import os
from typing import Dict, List, Optional, Tuple

import numpy as np

from hpcmarl.analysis.compare import unique_labels
from hpcmarl.analysis.export import RunData, load_run
from hpcmarl.storage import StorageError

FORMATS = {".png": "png", ".svg": "svg"}
X_AXES = {"env_steps": "env steps", "wall_time": "wall time [s]"}
SEED_KEYS = ("seed", "run_dir", "fresh")  # config keys that do not make runs different experiments
_GRID = 200  # points of the common x grid a seed band is drawn on


def _format_of(out: str) -> str:
    ext = os.path.splitext(out)[1].lower()
    if ext not in FORMATS:
        raise ValueError(f"{out}: unsupported plot format {ext or '(no extension)'!r}; use one of "
                         f"{', '.join(sorted(FORMATS))}")
    return FORMATS[ext]


def auto_window(n: int, smooth: int = 0) -> int:
    """Moving-average window: ``smooth`` when given, else max(1, n // 50); never more than n."""
    w = int(smooth) if smooth and smooth > 0 else max(1, n // 50)
    return max(1, min(w, n)) if n else 1


def moving_average(x: np.ndarray, y: np.ndarray, w: int) -> Tuple[np.ndarray, np.ndarray]:
    """Trailing mean over ``w`` points (NaNs ignored); the x of each mean is its window's last x."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if w <= 1 or len(y) < 2:
        return x, y
    ok = np.isfinite(y)
    s = np.convolve(np.where(ok, y, 0.0), np.ones(w), mode="valid")
    c = np.convolve(ok.astype(np.float64), np.ones(w), mode="valid")
    with np.errstate(invalid="ignore", divide="ignore"):
        return x[w - 1:], np.where(c > 0, s / np.maximum(c, 1), np.nan)


# --------------------------------------------------------------------------------------------------
# series: runs that differ only in the seed are drawn together
# --------------------------------------------------------------------------------------------------
def seed_sets(runs: List[RunData]) -> List[List[int]]:
    """Indices of ``runs`` grouped by config apart from :data:`SEED_KEYS`, in first-seen order."""
    keyed: Dict[str, List[int]] = {}
    for i, r in enumerate(runs):
        flat = {k: v for k, v in r.flat_config.items() if k not in SEED_KEYS}
        key = json.dumps(flat, sort_keys=True, default=str) if flat else f"#run{i}"  # no config: never merged
        keyed.setdefault(key, []).append(i)
    return list(keyed.values())


def _series(runs: List[RunData]) -> List[Tuple[str, List[RunData]]]:
    labels = unique_labels(runs)
    sets = seed_sets(runs)
    reps = [runs[s[0]].flat_config for s in sets]
    diff_keys = sorted(k for k in set().union(*reps) if k not in SEED_KEYS
                       and len({json.dumps(f.get(k), sort_keys=True, default=str) for f in reps}) > 1)
    out = []
    for s, rep in zip(sets, reps):
        members = [runs[i] for i in s]
        if len(members) == 1:
            out.append((labels[s[0]], members))
            continue
        if diff_keys:
            name = ", ".join(f"{k}={rep.get(k)}" for k in diff_keys)
            name = name if len(name) <= 60 else name[:57] + "..."
        else:
            name = os.path.commonprefix([labels[i] for i in s]).rstrip("-_.") or str(rep.get("name", "runs"))
        out.append((f"{name}: mean of {len(members)} seeds, min-max", members))
    return out


def _draw(ax, color, label: str, curves: List[Tuple[np.ndarray, np.ndarray]]) -> bool:
    """One line, or (several curves) their mean on a common grid over the x range they all cover
    with a min–max band. Returns whether anything was drawn."""
    curves = [(x, y) for x, y in curves if len(x)]
    if not curves:
        return False
    if len(curves) == 1:
        x, y = curves[0]
        ax.plot(x, y, color=color, label=label, lw=1.4, marker="o" if len(x) == 1 else None)
        return True
    lo = max(float(np.min(x)) for x, _ in curves)
    hi = min(float(np.max(x)) for x, _ in curves)
    if hi <= lo:  # no common range: show the members
        for j, (x, y) in enumerate(curves):
            ax.plot(x, y, color=color, lw=1.0, alpha=0.7, label=label if j == 0 else None)
        return True
    grid = np.linspace(lo, hi, _GRID)
    ys = np.stack([np.interp(grid, x, np.where(np.isfinite(y), y, np.nan)) for x, y in curves])
    with np.errstate(invalid="ignore"):
        ax.fill_between(grid, np.nanmin(ys, 0), np.nanmax(ys, 0), color=color, alpha=0.25, lw=0)
        ax.plot(grid, np.nanmean(ys, 0), color=color, label=label, lw=1.6)
    return True


def _sorted_xy(x: np.ndarray, y: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    o = np.argsort(x, kind="stable")
    return np.asarray(x, np.float64)[o], np.asarray(y, np.float64)[o]


def _figure(n_panels: int):
    from matplotlib.figure import Figure

    cols = min(n_panels, 3)
    rows = (n_panels + cols - 1) // cols
    fig = Figure(figsize=(5.2 * cols, 3.8 * rows), layout="constrained")
    axes = [fig.add_subplot(rows, cols, i + 1) for i in range(n_panels)]
    return fig, axes


def _colors(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return [cmap(i % 10) for i in range(n)]


# --------------------------------------------------------------------------------------------------
# the plots
# --------------------------------------------------------------------------------------------------
def _plot_returns(runs: List[RunData], x: str, smooth: int):
    groups: List[str] = []
    for r in runs:
        groups += [g for g in r.groups if g not in groups]
    if not groups:
        raise StorageError(f"{runs[0].run_path}: no policy groups recorded (no return/<group> columns)")
    fig, w = _panels(runs, [f"return/{g}" for g in groups], x, smooth, lambda r: r.episodes, "episode return",
                     "no finished episodes")
    evaluated = False
    for color, (label, members) in zip(_colors(len(_series(runs))), _series(runs)):
        for j, r in enumerate(members):  # the evaluation protocol's returns (eval.*), beside the training return
            ev = r.eval or {}
            if not len(ev.get("absolute", [])) or x not in ev:
                continue
            periodic = ev["absolute"] == 0
            for ax, g in zip(fig.axes, groups):
                if f"return_mean/{g}" in ev:
                    ax.plot(ev[x][periodic], ev[f"return_mean/{g}"][periodic], "x", color=color, ms=6,
                            label=f"{label}: evaluation" if j == 0 else None)
                    ax.legend(fontsize="small")
                    evaluated = True
    fig.suptitle(f"episode return per group ({w}-episode moving average" + ("; x: evaluations" if evaluated else "")
                 + ")", fontsize="medium")
    return fig


def _panels(runs: List[RunData], columns: List[str], x: str, smooth: int, table, ylabel: Optional[str], empty: str):
    """One panel per column of ``table(run)`` against ``x``, a smoothed curve per series of runs;
    returns the figure and the smoothing windows used (as text)."""
    series = _series(runs)
    fig, axes = _figure(len(columns))
    windows = set()
    for ax, col in zip(axes, columns):
        drawn = False
        for color, (label, members) in zip(_colors(len(series)), series):
            curves = []
            for r in members:
                t = table(r)
                if col not in t or x not in t or not len(t[x]):
                    continue
                xs, ys = _sorted_xy(t[x], t[col])
                w = auto_window(len(ys), smooth)
                windows.add(w)
                curves.append(moving_average(xs, ys, w))
            drawn |= _draw(ax, color, label, curves)
        ax.set_title(col)
        ax.set_xlabel(X_AXES[x])
        ax.set_ylabel(ylabel or col)
        ax.grid(alpha=0.3)
        if drawn:
            ax.legend(fontsize="small")
        else:
            ax.text(0.5, 0.5, empty, ha="center", va="center", transform=ax.transAxes)
    return fig, ", ".join(str(v) for v in sorted(windows)) or "-"


def _available(runs: List[RunData]) -> List[str]:
    return sorted(set().union(*[set(r.metrics) for r in runs]))


def _plot_metric(runs: List[RunData], metric: str, x: str, smooth: int):
    names = _available(runs)
    if metric in names:
        panels = [metric]
    else:
        groups = {g for r in runs for g in r.groups}  # "entropy" -> every "<group>/entropy"
        panels = sorted(n for n in names if "/" in n and n.split("/", 1)[0] in groups and n.split("/", 1)[1] == metric)
    if not panels:
        where = runs[0].run_path if len(runs) == 1 else ", ".join(r.run_path for r in runs)
        raise StorageError(f"{where}: unknown metric {metric!r}; available: "
                           f"{', '.join(names) or '(none: the run has logged no update yet)'}, lag, league")
    fig, w = _panels(runs, panels, x, smooth, lambda r: r.metrics, None, "no rows")
    fig.suptitle(f"{metric} ({w}-update moving average)", fontsize="medium")
    return fig


def _plot_lag(runs: List[RunData]):
    have = [r for r in runs if "lag_mean" in r.metrics]
    if not have:
        raise StorageError(f"{runs[0].run_path}: no lag_mean metric to histogram; available: "
                           f"{', '.join(_available(runs)) or '(none)'}")
    labels = dict(zip([id(r) for r in runs], unique_labels(runs)))
    fig, (ax,) = _figure(1)
    vals = [r.metrics["lag_mean"][np.isfinite(r.metrics["lag_mean"])] for r in have]
    allv = np.concatenate(vals) if vals else np.zeros(0)
    lo, hi = (float(allv.min()), float(allv.max())) if len(allv) else (0.0, 1.0)
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    bins = np.linspace(lo, hi, 31)
    for color, r, v in zip(_colors(len(have)), have, vals):
        ax.hist(v, bins=bins, color=color, alpha=0.5 if len(have) > 1 else 0.9,
                label=f"{labels[id(r)]} ({len(v)} updates)")
    ax.set_xlabel("lag_mean (policy versions behind, mean per update)")
    ax.set_ylabel("updates")
    ax.set_title("policy lag")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return fig


def _plot_league(runs: List[RunData], x: str, smooth: int):
    """``/league`` is read as a table (datasets sharing one row count). Wide layout: one column per
    player (``rating/<player>`` or any other numeric column) next to ``update``/``env_steps``/
    ``wall_time``; long layout: ``player`` and ``rating`` columns, one line per player."""
    for r in runs:
        if r.league is None:
            raise StorageError(f"{r.run_path}: the run has no league data (no /league group)")
    labels = unique_labels(runs)
    fig, (ax,) = _figure(1)
    xcols = ("update", "env_steps", "wall_time")
    for label, r in zip(labels, runs):
        t = r.league
        n = min((len(v) for v in t.values()), default=0)
        if not n:
            continue
        xname = x if x in t else ("update" if "update" in t else None)
        xs = np.asarray(t[xname], np.float64) if xname else np.arange(n, dtype=np.float64)
        ax.set_xlabel(X_AXES.get(xname, xname) if xname else "league row")
        if "member" in t and "elo" in t:  # league mode: Elo of each group's live policy and of the baselines
            from hpcmarl.league.server import member_name

            names = json.loads(r.attrs.get("league_groups") or "[]")
            lines = {f"{member_name(int(m), names, {})} (Elo)": (xs[t["member"] == m], t["elo"][t["member"] == m])
                     for m in np.unique(t["member"]) if m < 0}
        elif "player" in t and "rating" in t:
            lines = {f"player {p if not isinstance(p, bytes) else p.decode()}": t["player"] == p
                     for p in np.unique(t["player"])}
            lines = {k: (xs[sel], np.asarray(t["rating"], np.float64)[sel]) for k, sel in lines.items()}
        else:
            cols = [k for k in sorted(t) if k not in xcols and t[k].ndim == 1 and t[k].dtype.kind in "fiu"]
            rated = [k for k in cols if k.startswith("rating")]
            lines = {k: (xs, np.asarray(t[k], np.float64)) for k in (rated or cols)}
        for name, (lx, ly) in lines.items():
            lx, ly = _sorted_xy(lx, ly)
            ax.plot(*moving_average(lx, ly, auto_window(len(ly), smooth) if smooth else 1),
                    label=name if len(runs) == 1 else f"{label}: {name}", lw=1.3)
    ax.set_ylabel("rating")
    ax.set_title("league ratings")
    ax.grid(alpha=0.3)
    if ax.get_lines():
        ax.legend(fontsize="small")
    return fig


def exploitability_curves(run: RunData) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    """``{"latest" | "uniform" | "meta_nash": (env steps, NashConv)}`` of a run's ``/league/exploitability`` rows
    (update -> env steps through ``/metrics``)."""
    from hpcmarl.storage import Run

    t = Run(run.dir)._table("league/exploitability")
    if not len(t.get("update", [])):
        raise StorageError(f"{run.run_path}: no exploitability rows (an OpenSpiel game with "
                           f"league.exploitability_every > 0 writes /league/exploitability)")
    upd, steps = run.metrics.get("update", np.zeros(0)), run.metrics.get("env_steps", np.zeros(0))
    x = np.interp(t["update"], upd, steps) if len(upd) else np.asarray(t["update"], np.float64)
    return {k: (x, np.asarray(t[k], np.float64)) for k in ("latest", "uniform", "meta_nash")}


def _plot_exploitability(runs: List[RunData]):
    fig, (ax,) = _figure(1)
    styles = {"latest": "-", "uniform": "--", "meta_nash": ":"}
    for color, label, r in zip(_colors(len(runs)), unique_labels(runs), runs):
        for k, (x, y) in exploitability_curves(r).items():
            ax.plot(x, y, styles[k], color=color, lw=1.4, label=k if len(runs) == 1 else f"{label}: {k}")
    ax.set_xlabel("env steps")
    ax.set_ylabel("NashConv")
    ax.set_yscale("log")
    ax.set_title("NashConv of the newest snapshot and the pool mixtures", fontsize="medium")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return fig


def plot_runs(run_dirs: List[str], out: str, metric: Optional[str] = None, x: str = "env_steps",
              smooth: int = 0) -> str:
    """Plot ``run_dirs`` into ``out`` (``.png`` or ``.svg``); see the module docstring for what
    ``metric`` selects. ``x`` is ``env_steps`` or ``wall_time``; ``smooth`` the moving-average window
    (episodes for returns, updates for metrics; 0 = max(1, n // 50)). Returns ``out``."""
    fmt = _format_of(out)
    if x not in X_AXES:
        raise ValueError(f"x must be one of {', '.join(X_AXES)} (got {x!r})")
    if smooth is None or int(smooth) < 0:
        raise ValueError(f"smooth must be >= 0 (got {smooth!r})")
    if isinstance(run_dirs, str):
        run_dirs = [run_dirs]
    if not run_dirs:
        raise ValueError("plot needs at least one run directory")
    runs = [load_run(d) for d in run_dirs]

    import matplotlib

    matplotlib.use("Agg")
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "hpcmarl"}):
        if metric is None:
            fig = _plot_returns(runs, x, int(smooth))
        elif metric == "lag":
            fig = _plot_lag(runs)
        elif metric == "league":
            fig = _plot_league(runs, x, int(smooth))
        elif metric == "exploitability":
            fig = _plot_exploitability(runs)
        else:
            fig = _plot_metric(runs, metric, x, int(smooth))
        parent = os.path.dirname(os.path.abspath(out))
        os.makedirs(parent, exist_ok=True)
        tmp = os.path.join(parent, f".{os.path.basename(out)}.tmp{os.getpid()}")
        try:
            fig.savefig(tmp, format=fmt, dpi=110, metadata={"Date": None} if fmt == "svg" else None)
            os.replace(tmp, out)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    return out
