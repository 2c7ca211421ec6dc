"""Specimen runs for the HDF5 schema check: five tiny runs made by ``hpcmarl train`` with the real writers, one per
data flow and mode, and :func:`check_run`, which compares their files with the names :mod:`docs_schema` documents.
Each takes a few seconds (a few updates of a small network); they run side by side. The league specimen needs
``mpirun`` (a league run has a learner, an actor and the league rank); without it the league entries stay unchecked
(:func:`available` says why).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from typing import Dict, List, Optional, Tuple

import yaml
from docs_schema import ATTR, DATA, FILES, PATHS, WHEN, entries, pattern

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_SPREAD = {"name": "simple_spread_v3", "num_envs": 2, "kwargs": {"max_cycles": 5}}
_OUT = {"checkpoint_every": 2, "keep_checkpoints": 1, "progress_s": 60, "trajectories": True}
_BASE = {"env": _SPREAD, "output": _OUT, "train": {"total_env_steps": 10_000_000, "max_updates": 3},
         "learner": {"threads": 1}, "runtime": {"timeout_s": 60}}

# name -> (ranks, config): what each specimen shows (the schema's WHEN tags name them)
SPECIMENS: Dict[str, tuple] = {
    # PPO (reward standardisation on) on the synchronous rollout flow, evaluated every update; its trajectory files
    # are also indexed (trajectories/index.h5)
    "ppo": (1, {**_BASE, "algo": {"name": "mappo", "unroll_length": 5, "epochs": 1, "hidden": 16, "reward_norm": True},
                "eval": {"every_env_steps": 10, "episodes": 2, "num_envs": 2}}),
    # QMIX with every MAST component on: sparse masks, reward normalisation, dual replay
    "qmix": (1, {**_BASE, "algo": {"name": "qmix", "unroll_length": 5, "hidden": 16, "mixer_embed": 8,
                                   "hyper_hidden": 16, "buffer_episodes": 50, "batch_episodes": 2,
                                   "learning_starts": 2, "sparsity": 0.5, "topology_every": 1, "reward_norm": True,
                                   "recent_episodes": 4, "td_lambda": 0.5}}),
    # MA-Trace on the asynchronous rollout flow
    "matrace": (1, {**_BASE, "algo": {"name": "matrace", "unroll_length": 5, "hidden": 16}}),
    # NIGT on the gradient flow
    "nigt": (1, {**_BASE, "algo": {"name": "nigt", "batch": 2, "init_batch": 2, "hidden": 16}}),
    # a PSRO league on Kuhn poker: pool snapshots, evaluation, exact payoffs and exploitability (OpenSpiel)
    "league": (3, {**_BASE, "env": {"name": "kuhn_poker", "num_envs": 8},
                   "algo": {"name": "ippo", "unroll_length": 4, "hidden": 16},
                   "league": {"enabled": True, "groups": [{"name": "main", "strategy": "meta_nash", "self_play": 0.0,
                                                           "snapshot_every": 1,
                                                           "snapshot_greedy": True}],
                              "meta_game": "exact", "exploitability_every": 1, "eval_games": 4, "eval_pool": 1},
                   "train": {"total_env_steps": 10_000_000, "max_updates": 4}}),
}


def available() -> Dict[str, Optional[str]]:
    """``{specimen: None}`` for those this machine can make, ``{specimen: reason}`` for the others."""
    mpirun = shutil.which("mpirun")
    return {name: (None if ranks == 1 or mpirun else "mpirun not installed") for name, (ranks, _) in SPECIMENS.items()}


# the one-rank specimens run one after another in one process (torch is imported once); a run that fails exits
_SERIAL = """import sys
from hpcmarl import cli
for path, run in zip(sys.argv[1::2], sys.argv[2::2]):
    try:
        cli.main(["train", path, "run_dir=" + run])
    except SystemExit as e:
        if e.code:
            sys.exit(f"{path}: exit {e.code}")
"""


def make(out_dir: str, names: Optional[List[str]] = None, timeout: float = 240.0) -> Dict[str, str]:
    """Make the specimens ``names`` (default: every one this machine can) under ``out_dir``: the one-rank ones in one
    process, each league run under mpirun beside it; returns ``{specimen: run directory}``. Raises RuntimeError with
    the output of a run that failed."""
    can = available()
    names = [n for n in (names or list(SPECIMENS)) if can[n] is None]
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1", OMPI_MCA_mpi_yield_when_idle="1", PYTHONUNBUFFERED="1",
               HOROVOD_LOG_LEVEL="error",
               PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
    runs, serial, cmds = {}, [], {}
    for name in names:
        ranks, cfg = SPECIMENS[name]
        run = runs[name] = os.path.join(out_dir, name)
        path = os.path.join(out_dir, f"{name}.yaml")
        with open(path, "w") as f:
            yaml.safe_dump({"name": name, **cfg}, f)
        if ranks == 1:
            serial += [path, run]
        else:
            cmds[name] = [shutil.which("mpirun"), "-n", str(ranks), "--bind-to", "none", sys.executable, "-m",
                          "hpcmarl.cli", "train", path, f"run_dir={run}"]
    if serial:
        cmds["serial"] = [sys.executable, "-c", _SERIAL] + serial
    procs = {name: subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                    cwd=out_dir, start_new_session=True) for name, cmd in cmds.items()}
    failed = []
    for name, p in procs.items():
        try:
            out, _ = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, 9)
            out, _ = p.communicate()
            failed.append(f"{name}: timed out after {timeout:g}s\n{out[-2000:]}")
            continue
        if p.returncode != 0:
            failed.append(f"{name}: exit {p.returncode}\n{out[-2000:]}")
    if failed:
        raise RuntimeError("specimen runs failed:\n" + "\n".join(failed))
    if "ppo" in runs:
        from hpcmarl.analysis.trajectory_index import build_index

        build_index(runs["ppo"])
    return runs


def _type_of(v) -> str:
    if isinstance(v, str):
        return "str"
    return str(getattr(v, "dtype", type(v).__name__))


def names_in(path: str) -> Tuple[Dict[str, str], Dict[str, str], List[str]]:
    """``(root attributes {name: type}, datasets {path: dtype}, other attributes ["path@name"])`` of an HDF5 file."""
    import h5py

    attrs, data, other = {}, {}, []
    with h5py.File(path, "r", swmr=True) if path.endswith("run.h5") else h5py.File(path, "r") as f:
        attrs = {k: _type_of(v) for k, v in f.attrs.items()}

        def visit(n, o):
            other.extend(f"{n}@{a}" for a in o.attrs)
            if isinstance(o, h5py.Dataset):
                data[n] = "bytes" if o.dtype.kind == "S" else str(o.dtype)

        f.visititems(visit)
    return attrs, data, other


def file_key(rel: str) -> str:
    for path, key in PATHS:
        if pattern(path, []).match(rel) or (key == "pool" and re.fullmatch(r"pool/[^/]+-v\d{7}\.h5", rel)):
            return key
    return ""


def check_run(specimen: str, run_dir: str) -> List[str]:
    """What differs between the files of specimen run ``run_dir`` and the names documented for ``specimen``."""
    import h5py

    with h5py.File(os.path.join(run_dir, "run.h5"), "r") as f:
        groups = set(json.loads(f.attrs["groups"])) | set(json.loads(f.attrs["group_agents"]))
        groups |= set(json.loads(f.attrs["league_groups"]))
    problems, seen = [], {}
    for dirpath, _, files in os.walk(run_dir):
        for fn in sorted(files):
            rel = os.path.relpath(os.path.join(dirpath, fn), run_dir)
            key = file_key(rel)
            if not key:
                problems.append(f"{specimen}: file {rel} is not documented")
            elif key != "config":
                seen.setdefault(key, []).append((rel, names_in(os.path.join(dirpath, fn))))
    for key in FILES:
        docs = entries(key)
        mine = [(kind, name, typ, pattern(name, list(groups))) for kind, name, typ, when in docs
                if specimen in WHEN[when][1]]
        if mine and key not in seen:
            problems.append(f"{specimen}: no {FILES[key][0]} file, but the schema documents one for this run")
        found = set()
        for rel, (attrs, data, other) in seen.get(key, []):
            problems += [f"{specimen}: {rel}: attribute {o} on a group or dataset is not documented" for o in other]
            for kind, names in ((ATTR, attrs), (DATA, data)):
                for n, typ in sorted(names.items()):
                    hits = [(k, dn, dt) for k, dn, dt, rx in mine if k == kind and rx.match(n)]
                    if not hits:
                        other_runs = [w for k, dn, _, w in docs if k == kind and pattern(dn, list(groups)).match(n)]
                        where = f" (documented for: {WHEN[other_runs[0]][0]})" if other_runs else ""
                        problems.append(f"{specimen}: {rel}: {kind} {n} is not documented for this run{where}")
                        continue
                    found.update(dn for _, dn, _ in hits)
                    want = {dt.split()[0] for _, _, dt in hits if dt}
                    if want and typ not in want:
                        problems.append(f"{specimen}: {rel}: {kind} {n} is {typ}, documented {'/'.join(sorted(want))}")
        problems += [f"{specimen}: {FILES[key][0]}: documented {kind} {name} is not in the files of this run"
                     for kind, name, _, _ in mine if name not in found and key in seen]
    return problems
