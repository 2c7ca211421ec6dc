"""marl-eval's raw-data JSON (https://github.com/instadeepai/marl-eval) from runs: one run's
(:func:`marl_eval_data`, written by ``hpcmarl export``) and several runs merged into one file
(:func:`merge_marl_eval`, written by ``hpcmarl compare --by KEY --out DIR``).

The runs are passed in as :class:`hpcmarl.analysis.export.RunData` (read by ``load_run``); this module
imports nothing else of hpcmarl's but the environment registry.
"""
from __future__ import annotations

import re
from typing import Dict, List

import numpy as np


def env_family(env: str) -> str:
    """``simple_spread_v3`` -> ``mpe``, ``pursuit_v5`` -> ``sisl``: the package family of a registered
    environment (marl-eval's "environment name"); the env name itself is the task."""
    try:
        from hpcmarl.envs import BATCHED, REGISTRY

        if env.partition(":")[0] in BATCHED:  # jaxmarl:MPE_simple_spread_v3 -> jaxmarl
            return env.partition(":")[0]
        factory = REGISTRY[env].factory
    except Exception:
        return "pettingzoo"
    parts = factory.split(":")[0].split(".")
    if parts[0] == "pettingzoo" and len(parts) > 2:
        return parts[1]
    return re.sub(r"\d+$", "", parts[0]) or parts[0]


def _points(table: Dict[str, np.ndarray], groups: List[str], sel) -> dict:
    """``{"return": team returns, "<group>_return": ..., "win_rate": 0/1 per episode (battles)}`` of the rows ``sel``
    of an episode table."""
    out = {"return": np.sum([table[f"return/{g}"][sel].astype(np.float64) for g in groups], axis=0).tolist()}
    for g in groups:
        out[f"{g}_return"] = table[f"return/{g}"][sel].astype(np.float64).tolist()
    won = table.get("won")
    if won is not None and len(won[sel]) and np.isfinite(won[sel]).all():  # battles (SMAX): marl-eval's win_rate
        out["win_rate"] = won[sel].astype(np.float64).tolist()
    return out


def _from_eval(data, groups: List[str]) -> Dict[str, dict]:
    """One ``step_k`` per /eval row that is not the absolute metric, ``absolute_metrics`` from the absolute-metric
    row (else from the evaluation with the best mean team return). Per-episode returns from /eval_episodes; an
    evaluation without rows there gives its ``return_mean`` as a one-element list."""
    ev, eps = data.eval, data.eval_episodes or {}
    n = len(ev[f"return_mean/{groups[0]}"])
    absolute = ev["absolute"].astype(np.float64) if "absolute" in ev else np.zeros(n)
    per_episode = "eval" in eps and all(f"return/{g}" in eps for g in groups)
    run, best, best_mean, abs_entry = {}, None, -np.inf, None
    for i in range(n):
        sel = eps["eval"] == i if per_episode else np.zeros(0, bool)
        if per_episode and sel.any():
            entry = _points(eps, groups, sel)
        else:
            entry = _points({f"return/{g}": ev[f"return_mean/{g}"] for g in groups}, groups, slice(i, i + 1))
        if absolute[i] >= 0.5:
            abs_entry = entry
            continue
        mean = float(np.mean(entry["return"]))
        step = {"step_count": int(ev["env_steps"][i]) if "env_steps" in ev else i, **entry}
        if "wall_time" in ev:
            step["elapsed_time"] = float(ev["wall_time"][i])
        run[f"step_{len(run)}"] = step
        if best is None or mean > best_mean:
            best, best_mean = entry, mean
    run["absolute_metrics"] = abs_entry or best or {}
    return run


def _from_training(eps: Dict[str, np.ndarray], groups: List[str], points: int) -> Dict[str, dict]:
    run: Dict[str, dict] = {}
    steps = eps["env_steps"].astype(np.int64)
    team = np.sum([eps[f"return/{g}"].astype(np.float64) for g in groups], axis=0)
    levels = np.unique(steps)
    best, best_mean = None, -np.inf
    for i, chunk in enumerate(np.array_split(levels, min(max(1, points), len(levels)))):
        sel = np.isin(steps, chunk)
        entry = {"step_count": int(chunk.max()), **_points(eps, groups, sel)}
        if "wall_time" in eps:
            entry["elapsed_time"] = float(eps["wall_time"][sel].max())
        run[f"step_{i}"] = entry
        if best is None or float(team[sel].mean()) > best_mean:
            best, best_mean = entry, float(team[sel].mean())
    run["absolute_metrics"] = {k: v for k, v in best.items() if k not in ("step_count", "elapsed_time")}
    return run


def marl_eval_data(data, points: int = 20) -> dict:
    """The marl-eval raw-data layout for one run::

        {env_family: {env_name: {algo: {"seed_<seed>": {"step_0": {"step_count": int, "elapsed_time": s,
                                                                   "return": [...], "<group>_return": [...]}, ...,
                                                        "absolute_metrics": {"return": [...], ...}}}}}}

    With evaluation rows (/eval), each evaluation that is not the absolute metric is one ``step_k``
    (``step_count`` = its env steps, the returns of its evaluation episodes) and the absolute-metric
    evaluation (the best policy re-evaluated) is ``absolute_metrics`` (without one: the evaluation with
    the best mean team return). Without /eval: ``points`` bins of consecutive logging points (distinct
    ``env_steps`` values of /episodes, i.e. update boundaries) of training episodes; each holds the
    episodes that finished there, with ``step_count`` the env steps at the bin's last update, and
    ``absolute_metrics`` holds the episodes of the bin with the best mean team return. ``return`` is
    the team return (the sum of the groups' ``return/<group>``), ``<group>_return`` each group's;
    ``elapsed_time`` the wall-clock seconds at the point."""
    eps = data.episodes
    ev = data.eval or {}
    eval_groups = [g for g in data.groups if f"return_mean/{g}" in ev]
    groups = [g for g in data.groups if f"return/{g}" in eps]
    if eval_groups and len(ev[f"return_mean/{eval_groups[0]}"]):
        run = _from_eval(data, eval_groups)
    elif len(eps.get("env_steps", [])) and groups:
        run = _from_training(eps, groups, points)
    else:
        run = {"absolute_metrics": {}}
    env = str(data.attrs.get("env") or data.config.get("env", {}).get("name", "unknown"))
    algo = str(data.attrs.get("algo") or data.config.get("algo", {}).get("name", "unknown"))
    seed = data.config.get("seed", 0)
    return {env_family(env): {env: {algo: {f"seed_{seed}": run}}}}  # BenchMARL's run key


def merge_marl_eval(parts: List[dict]) -> dict:
    """Several :func:`marl_eval_data` results in one marl-eval file (env -> task -> algo -> seed). Two runs with
    the same env, task, algorithm and seed key keep both: the later one's key gets ``_2``, ``_3``, ... appended."""
    out: dict = {}
    for part in parts:
        for env, tasks in part.items():
            for task, algos in tasks.items():
                for algo, seeds in algos.items():
                    dst = out.setdefault(env, {}).setdefault(task, {}).setdefault(algo, {})
                    for key, run in seeds.items():
                        k, n = key, 1
                        while k in dst:
                            n += 1
                            k = f"{key}_{n}"
                        dst[k] = run
    return out
