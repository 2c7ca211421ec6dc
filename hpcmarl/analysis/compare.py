"""Compare runs: which config keys differ, and where each run ended (final metrics table).

Read-only; bad input raises :class:`hpcmarl.storage.StorageError` naming the path.
"""
from __future__ import annotations

import json
import os
from typing import Dict, List

import numpy as np

from hpcmarl.analysis.export import RunData, check_file, load_run
from hpcmarl.analysis.summary import run_summary
from hpcmarl.storage import Run, StorageError
from hpcmarl.typedconfig import ABSENT


def _same(a, b) -> bool:
    try:
        return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)
    except (TypeError, ValueError):
        return a == b


def config_diff(runs: List[RunData]) -> Dict[str, list]:
    """Dotted config keys whose values are not all equal across ``runs`` -> one value per run
    (:data:`ABSENT` where a run lacks the key). Sorted by key."""
    flats = [r.flat_config for r in runs]
    keys = sorted(set().union(*flats)) if flats else []
    out = {}
    for k in keys:
        vals = [f.get(k, ABSENT) for f in flats]
        if any(not _same(vals[0], v) for v in vals[1:]):
            out[k] = vals
    return out


def unique_labels(runs: List[RunData]) -> List[str]:
    """Run directory base names, or the paths as given where base names repeat."""
    base = [r.label for r in runs]
    return [b if base.count(b) == 1 else r.dir for b, r in zip(base, runs)]


def _summary_from_tables(data: RunData, window: int = 500) -> dict:
    """The part of :func:`~hpcmarl.analysis.summary.run_summary` that compare needs, from run.h5 alone (used when a
    checkpoint or trajectory file of the run is damaged: ``run_summary()`` would try to open it)."""
    m, eps = data.metrics, data.episodes
    last = lambda k, d=0: (m[k][-1].item() if k in m and len(m[k]) else d)  # noqa: E731
    out = {"env_steps": int(last("env_steps")), "updates": int(last("update")),
           "episodes": int(len(eps.get("length", []))), "wall_time_s": float(last("wall_time", 0.0)), "groups": {}}
    for g in data.groups:
        r = eps.get(f"return/{g}", np.zeros(0))
        out["groups"][g] = {"return_last": float(r[-min(window, len(r)):].mean()) if len(r) else None}
    if "sps" in m and len(m["sps"]):
        out["sps_last"] = float(m["sps"][-1])
    return out


def _summary(data: RunData) -> tuple:
    run = Run(data.dir)
    bad = []
    for p in run.checkpoints() + run.trajectory_files():
        try:
            check_file(p)
        except StorageError as e:
            bad.append(str(e))
    if bad:
        return _summary_from_tables(data), bad
    try:
        return run_summary(run), []
    except StorageError:
        raise
    except Exception as e:  # damaged file that passed the cheap check
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise StorageError(f"{data.dir}: cannot summarise the run: {first}") from None


def compare_runs(run_dirs: List[str]) -> dict:
    """Config diff + final-metrics table of ``run_dirs``.

    Returns ``{"runs": [abs dirs], "labels": [...], "config_keys": n, "config_diff": {key: [value per
    run]}, "groups": [...], "columns": [...], "table": [{column: value}], "warnings": [...]}``; table
    columns are ``run, env_steps, updates, episodes, wall_time_s, return_last/<group>..., sps_last``
    (``return_last`` = the group's mean episode return over the last 500 episodes, as
    :func:`hpcmarl.analysis.summary.run_summary` computes it; ``None`` for a group a run does not have)."""
    if isinstance(run_dirs, str):
        run_dirs = [run_dirs]
    if not run_dirs:
        raise ValueError("compare needs at least one run directory")
    runs = [load_run(d) for d in run_dirs]
    labels = unique_labels(runs)
    groups: List[str] = []
    for r in runs:
        groups += [g for g in r.groups if g not in groups]
    columns = (["run", "env_steps", "updates", "episodes", "wall_time_s"] + [f"return_last/{g}" for g in groups]
               + ["sps_last"])
    table, warnings = [], []
    for label, r in zip(labels, runs):
        s, bad = _summary(r)
        warnings += bad
        row = {"run": label, "env_steps": s.get("env_steps"), "updates": s.get("updates"),
               "episodes": s.get("episodes"), "wall_time_s": s.get("wall_time_s")}
        for g in groups:
            row[f"return_last/{g}"] = (s.get("groups", {}).get(g) or {}).get("return_last")
        row["sps_last"] = s.get("sps_last")
        table.append(row)
    flats = [r.flat_config for r in runs]
    return {"runs": [os.path.abspath(r.dir) for r in runs], "labels": labels,
            "config_keys": len(set().union(*flats)), "config_diff": config_diff(runs),
            "groups": groups, "columns": columns, "table": table, "warnings": warnings}


# --------------------------------------------------------------------------------------------------
# text
# --------------------------------------------------------------------------------------------------
def _cell(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return "nan" if v != v else f"{float(v):.6g}"
    if isinstance(v, (dict, list, tuple)):
        return json.dumps(v, default=str)
    return str(v)


def _is_num(v) -> bool:
    return v is None or (isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool))


def format_table(header: List[str], rows: List[list]) -> str:
    """Aligned columns: numbers right-aligned, text left-aligned (the first column always left)."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(header)]
    right = [i > 0 and all(_is_num(row[i]) for row in rows) for i in range(len(header))]
    fmt = lambda vals: "  ".join(  # noqa: E731
        (v.rjust(w) if r else v.ljust(w)) for v, w, r in zip(vals, widths, right)).rstrip()
    lines = [fmt(header), fmt(["-" * w for w in widths])]
    lines += [fmt(r) for r in cells]
    return "\n".join(lines)


def format_compare(result: dict) -> str:
    """Text form of :func:`compare_runs`: the differing config keys (one column per run), then the
    final-metrics table (one row per run)."""
    labels = result["labels"]
    out = []
    diff = result["config_diff"]
    if len(labels) < 2:
        out.append(f"config: one run, nothing to compare ({result['config_keys']} keys)")
    elif not diff:
        out.append(f"config: identical ({result['config_keys']} keys)")
    else:
        out.append(f"config differences ({len(diff)} of {result['config_keys']} keys differ):")
        show = lambda v: "null" if v is None else _cell(v)  # noqa: E731  (YAML spelling)
        out.append(format_table(["key"] + labels, [[k] + [show(x) for x in v] for k, v in diff.items()]))
    out.append("")
    out.append("final metrics:")
    cols = result["columns"]
    out.append(format_table(cols, [[row.get(c) for c in cols] for row in result["table"]]))
    for w in result.get("warnings", []):
        out.append(f"warning: {w}")
    return "\n".join(out)
