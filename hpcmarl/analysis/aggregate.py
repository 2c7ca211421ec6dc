"""Paper-style comparison of groups of runs (``hpcmarl compare RUN... --by algo``): one score per run, runs
grouped by a config key (the runs of a group are its seeds), aggregated with rliable (Agarwal et al., 2021):
IQM, mean and median with stratified-bootstrap confidence intervals, performance profiles and the probability
of improvement between every pair of groups. The statistics are rliable's own (imported lazily: the
``.[stats]`` extra); this module only reads the scores and lays out the results.
"""
from __future__ import annotations

import json
import os
import warnings
from typing import List, Optional

import numpy as np

from hpcmarl.analysis.export import RunData, load_run
from hpcmarl.analysis.marleval import marl_eval_data, merge_marl_eval
from hpcmarl.storage import StorageError

MISSING = 'compare --by needs rliable: pip install -e ".[stats]"'
SOURCES = ("eval_absolute", "eval_last", "train_window")  # best first
METRICS = ("IQM", "mean", "median")


def load_rliable():
    """``(library, metrics, plot_utils)`` of rliable; ImportError when it (or its ``arch``) is not installed."""
    from rliable import library, metrics, plot_utils

    return library, metrics, plot_utils


def group_key(run: RunData, by: str):
    """The value of the dotted config key ``by`` in ``run`` (``algo`` means ``algo.name``; falls back to the
    run.h5 attribute of the same name for ``algo``/``env``); ``None`` when absent."""
    key = {"algo": "algo.name", "env": "env.name"}.get(by, by)
    val = run.flat_config.get(key)
    if val is None and key in ("algo.name", "env.name"):
        val = run.attrs.get(key.split(".")[0])
    return val


def run_score(run: RunData, group: str, window: Optional[int] = None, at_env_steps: Optional[int] = None) -> tuple:
    """``(score, source)`` of ``group`` (a policy group) in ``run``: the mean return of the absolute-metric evaluation
    (source ``eval_absolute``) if /eval has one, else of the last evaluation (``eval_last``), else the mean training
    return of the last ``window`` episodes (``train_window``; default: the run's ``output.episode_window``, else 500).
    ``at_env_steps``: the training window of the episodes finished by then (``train_window@S``), evaluations ignored."""
    ev = run.eval or {}
    col = ev.get(f"return_mean/{group}")
    if at_env_steps is None and col is not None and len(col):
        absolute = np.asarray(ev.get("absolute", np.zeros(len(col))), np.float64) >= 0.5
        if absolute.any():
            return float(col[np.flatnonzero(absolute)[-1]]), "eval_absolute"
        return float(col[-1]), "eval_last"
    r = run.episodes.get(f"return/{group}")
    if r is None:
        raise StorageError(f"{run.run_path}: no policy group {group!r} (groups: {', '.join(run.groups) or 'none'})")
    source = "train_window"
    if at_env_steps is not None:
        r = r[run.episodes["env_steps"] <= at_env_steps]
        source = f"train_window@{at_env_steps}"
    if not len(r):
        raise StorageError(f"{run.run_path}: no training episodes of group {group!r} to score")
    n = window or int((run.config.get("output") or {}).get("episode_window") or 500)
    return float(np.mean(r[-n:])), source


def _ci(x) -> list:
    return [float(x[0]), float(x[1])]


def aggregate_runs(run_dirs: List[str], by: str = "algo", group: Optional[str] = None, window: Optional[int] = None,
                   at_env_steps: Optional[int] = None, reps: int = 2000, seed: int = 0) -> dict:
    """Score every run (:func:`run_score`), group the runs by the config key ``by`` and aggregate each group's scores
    with rliable (``reps`` stratified-bootstrap replications, seeded with ``seed``: the same input gives the same
    output). ``group``: the policy group scored (default: each run's first). Returns a JSON-able dict::

        {"by", "group", "reps", "seed", "names": [...],
         "rows": [{"name", "runs", "source", "IQM", "IQM_ci": [lo, hi], "mean", "mean_ci", "median", "median_ci"}],
         "scores": {name: [score per run]}, "runs": {name: [dir per run]}, "sources": {name: [source per run]},
         "poi": {"X,Y": {"p": P(X > Y), "ci": [lo, hi]}}, "profile": {"tau": [...], name: [...]}, "warnings": [...]}
    """
    library, metrics, _ = load_rliable()
    if not run_dirs:
        raise ValueError("compare needs at least one run directory")
    datas = [load_run(d) for d in run_dirs]
    res: dict = {"by": by, "group": group, "reps": reps, "seed": seed, "names": [], "rows": [], "scores": {},
                 "runs": {}, "sources": {}, "poi": {}, "profile": {}, "warnings": []}
    tasks = set()
    for d in datas:
        name = str(group_key(d, by))
        g = group or (d.groups[0] if d.groups else None)
        if g is None:
            raise StorageError(f"{d.run_path}: the run has no policy groups")
        score, source = run_score(d, g, window, at_env_steps)
        tasks.add(str(group_key(d, "env")))
        res["scores"].setdefault(name, []).append(score)
        res["runs"].setdefault(name, []).append(os.path.abspath(d.dir))
        res["sources"].setdefault(name, []).append(source)
    res["names"] = names = sorted(res["scores"])
    if len(tasks) > 1 and by not in ("env", "env.name"):
        res["warnings"].append(f"runs of different environments ({', '.join(sorted(tasks))}): their scores are "
                               "not comparable")
    few = [n for n in names if len(res["scores"][n]) < 2]
    if few:
        res["warnings"].append(f"fewer than 2 runs in {', '.join(few)}: the confidence interval is degenerate")
    scores = {n: np.asarray(res["scores"][n], np.float64).reshape(-1, 1) for n in names}  # (runs, 1 task)
    funcs = (metrics.aggregate_iqm, metrics.aggregate_mean, metrics.aggregate_median)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # arch 7: random_state is deprecated (rliable passes it)
        point, ci = library.get_interval_estimates(scores, lambda x: np.array([f(x) for f in funcs]), reps=reps,
                                                   random_state=np.random.RandomState(seed))
        pairs = {f"{x},{y}": [scores[x], scores[y]] for i, x in enumerate(names) for y in names[i + 1:]}
        if pairs:
            p_point, p_ci = library.get_interval_estimates(pairs, metrics.probability_of_improvement, reps=reps,
                                                           random_state=np.random.RandomState(seed))
            res["poi"] = {k: {"p": float(p_point[k]), "ci": _ci(p_ci[k].reshape(-1))} for k in pairs}
        all_scores = np.concatenate([s.reshape(-1) for s in scores.values()])
        tau = np.linspace(all_scores.min(), all_scores.max(), 51)
        prof, _ = library.create_performance_profile(scores, tau, reps=1)
        _, prof_ci = library.get_interval_estimates(scores, lambda x: library.score_distributions(x, tau), reps=reps,
                                                    random_state=np.random.RandomState(seed))
    res["profile"] = {"tau": tau.tolist(), **{n: prof[n].tolist() for n in names},
                      "ci": {n: prof_ci[n].tolist() for n in names}}
    for n in names:
        srcs = res["sources"][n]
        row = {"name": n, "runs": len(srcs),
               "source": ", ".join(f"{s}" if srcs.count(s) == len(srcs) else f"{s} x{srcs.count(s)}"
                                   for s in sorted(set(srcs), key=srcs.index))}
        for j, m in enumerate(METRICS):
            row[m], row[f"{m}_ci"] = float(point[n][j]), _ci(ci[n][:, j])
        res["rows"].append(row)
    res["_marl_eval"] = merge_marl_eval([marl_eval_data(d) for d in datas])
    return res


# --------------------------------------------------------------------------------------------------
# text, files
# --------------------------------------------------------------------------------------------------
def _num(v: float) -> str:
    return f"{v:.4g}"


def format_aggregate(res: dict) -> str:
    """Markdown: the per-group table, then the probability-of-improvement matrix (row X, column Y: P(X > Y))."""
    by = res["by"]
    out = [f"Scores: one per run ({'policy group ' + res['group'] if res['group'] else 'first policy group'}); "
           f"95% stratified-bootstrap CIs from rliable ({res['reps']} replications, seed {res['seed']}).", "",
           f"| {by} | runs | score source | IQM [95% CI] | mean [95% CI] | median [95% CI] |",
           "|---|---:|---|---|---|---|"]
    for r in res["rows"]:
        cells = [f"{_num(r[m])} [{_num(r[m + '_ci'][0])}, {_num(r[m + '_ci'][1])}]" for m in METRICS]
        out.append(f"| {r['name']} | {r['runs']} | {r['source']} | " + " | ".join(cells) + " |")
    names = res["names"]
    if len(names) > 1:
        out += ["", "Probability of improvement P(row > column) [95% CI]:", "",
                "| X \\ Y | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        for x in names:
            cells = []
            for y in names:
                p = res["poi"].get(f"{x},{y}")
                q = res["poi"].get(f"{y},{x}")
                if x == y:
                    cells.append("-")
                elif p:
                    cells.append(f"{p['p']:.2f} [{p['ci'][0]:.2f}, {p['ci'][1]:.2f}]")
                else:  # P(X > Y) = 1 - P(Y > X) (ties count one half)
                    cells.append(f"{1 - q['p']:.2f} [{1 - q['ci'][1]:.2f}, {1 - q['ci'][0]:.2f}]")
            out.append(f"| {x} | " + " | ".join(cells) + " |")
    out += [""] + [f"warning: {w}" for w in res["warnings"]]
    return "\n".join(out).rstrip() + "\n"


def write_outputs(res: dict, out_dir: str) -> List[str]:
    """``compare.md``, ``compare.json``, ``marl_eval.json`` (every run, for marl-eval) and the three PNG plots
    (``performance_profile``, ``interval_estimates``, ``probability_of_improvement``) in ``out_dir``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    _, _, plot_utils = load_rliable()
    os.makedirs(out_dir, exist_ok=True)
    files = []

    def put(name: str, text: str) -> None:
        path = os.path.join(out_dir, name)
        with open(path + ".tmp", "w") as fh:
            fh.write(text)
        os.replace(path + ".tmp", path)
        files.append(path)

    put("compare.md", format_aggregate(res))
    put("compare.json", json.dumps({k: v for k, v in res.items() if not k.startswith("_")}, indent=1))
    put("marl_eval.json", json.dumps(res["_marl_eval"], indent=1))
    names, rows = res["names"], {r["name"]: r for r in res["rows"]}

    def save(fig, name: str) -> None:
        path = os.path.join(out_dir, name)
        fig.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(fig)
        files.append(path)

    point = {n: np.array([rows[n][m] for m in METRICS]) for n in names}
    ci = {n: np.array([rows[n][f"{m}_ci"] for m in METRICS]).T for n in names}
    fig, _ = plot_utils.plot_interval_estimates(point, ci, metric_names=list(METRICS), algorithms=names,
                                                xlabel="return", max_ticks=3,
                                                xlabel_y_coordinate=-1.2 / max(1, len(names)))
    save(fig, "interval_estimates.png")
    fig, ax = plt.subplots(figsize=(7, 4))
    prof = res["profile"]
    colors = dict(zip(names, plt.get_cmap("tab10").colors * (1 + len(names) // 10)))
    plot_utils.plot_performance_profiles({n: np.array(prof[n]) for n in names}, np.array(prof["tau"]),
                                         performance_profile_cis={n: np.array(prof["ci"][n]) for n in names},
                                         colors=colors, xlabel=r"return ($\tau$)", ax=ax)
    ax.legend([plt.Line2D([], [], color=colors[n]) for n in names], names, loc="upper right")
    save(fig, "performance_profile.png")
    fig, ax = plt.subplots(figsize=(5, 1 + 0.5 * max(1, len(res["poi"]))))
    if res["poi"]:
        plot_utils.plot_probability_of_improvement({k: v["p"] for k, v in res["poi"].items()},
                                                   {k: np.array(v["ci"]) for k, v in res["poi"].items()}, ax=ax)
    else:
        ax.text(0.5, 0.5, "one group: nothing to compare", ha="center", va="center")
        ax.set_axis_off()
    save(fig, "probability_of_improvement.png")
    return files
