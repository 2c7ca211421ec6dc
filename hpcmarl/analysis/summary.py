"""A run's summary (what ``hpcmarl inspect`` prints): progress, returns per group, league ratings, NIGT rounds,
value-based learners' FLOPs, timings and file sizes, from a run directory's files."""
from __future__ import annotations

import os

import numpy as np

from hpcmarl.storage import KIND_TRAJ, Run, StorageError, open_read
from hpcmarl.storage.checkpoints import checkpoint_attrs


def eval_summary(ev: dict, groups) -> dict:
    """Per group from run.h5 /eval: the last and the best periodic evaluation (mean return, env steps), the absolute
    metric (``None`` before the run's end) and how many evaluations there were."""
    periodic = ev["absolute"] == 0
    out = {}
    for g in groups:
        r, steps = ev[f"return_mean/{g}"][periodic], ev["env_steps"][periodic]
        absolute = ev[f"return_mean/{g}"][~periodic]
        out[g] = {"evaluations": int(periodic.sum()),
                  "last": float(r[-1]) if len(r) else None, "last_env_steps": int(steps[-1]) if len(r) else None,
                  "best": float(r.max()) if len(r) else None,
                  "best_env_steps": int(steps[int(np.argmax(r))]) if len(r) else None,
                  "absolute": float(absolute[-1]) if len(absolute) else None,
                  "absolute_episodes": int(ev["episodes"][~periodic][-1]) if len(absolute) else None}
    return out


def _hosts(rank_map) -> dict:
    """``{host: [[rank, role], ...]}`` from run.h5's rank map (``{}`` when it is missing or not the expected JSON)."""
    import json

    try:
        rows = json.loads(rank_map) if isinstance(rank_map, str) else []
        out: dict = {}
        for r in rows:
            out.setdefault(str(r["host"]), []).append([int(r["rank"]), str(r["role"])])
        return out
    except (ValueError, TypeError, KeyError):
        return {}


def run_summary(run: Run, window: int = 500) -> dict:
    """The summary of ``run``; returns are averaged over ``window`` episodes (first, last, best moving average)."""
    import json

    attrs = run.attrs()
    m = run.metrics()
    eps = run.episodes()
    groups = json.loads(attrs.get("groups", "[]")) if isinstance(attrs.get("groups"), str) else []
    last = lambda k, d=0: (m[k][-1].item() if k in m and len(m[k]) else d)
    out = {
        "run_dir": os.path.abspath(run.dir),
        "schema_version": int(attrs.get("schema_version", -1)),
        "env": attrs.get("env"), "algo": attrs.get("algo"),
        "env_steps": int(last("env_steps")), "updates": int(last("update")),
        "episodes": int(len(eps.get("length", []))), "wall_time_s": float(last("wall_time", 0.0)),
        "env_errors": int(last("env_errors")),
        "groups": {},
        "checkpoints": run.checkpoints(),
        "trajectory_files": {},
        "hosts": _hosts(attrs.get("rank_map")),
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
    won = eps.get("won", np.zeros(0))
    won = won[np.isfinite(won)]
    if len(won):  # battles (SMAX): the won share of the first and the last `window` episodes that have an outcome
        w = min(window, len(won))
        out["win_rate"] = {"first": float(won[:w].mean()), "last": float(won[-w:].mean()), "episodes": int(len(won))}
    ev = run._table("eval")
    if ev and len(ev.get("absolute", [])):  # the evaluation protocol (eval.*)
        out["eval"] = eval_summary(ev, groups)
    pool = run._table("league/pool")
    if pool:  # league mode (the table exists, possibly still empty)
        ratings = run._table("league/ratings")
        live = {}
        for mid, elo, mu, sg in zip(ratings.get("member", []), ratings.get("elo", []), ratings.get("mu", []),
                                    ratings.get("sigma", [])):
            if mid < 0:
                live[int(mid)] = {"elo": float(elo), "ordinal": float(mu - 3 * sg)}
        out["league"] = {"pool": int(len(pool.get("member", []))), "ratings": live}
    if out["checkpoints"]:
        try:
            cattrs = checkpoint_attrs(out["checkpoints"][-1], root=os.path.dirname(out["checkpoints"][-1]))
            out["discarded_episodes"] = max(int(cattrs.get("discarded_episodes", 0)),
                                            int(attrs.get("discarded_episodes", 0)))  # run.h5: the final stop's
        except StorageError as e:
            out["checkpoint_error"] = str(e)
    for p in run.trajectory_files():
        try:
            with open_read(p, KIND_TRAJ, root=run.dir) as f:
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
    out["file_sizes_bytes"] = {"run.h5": size([run.run_path]), "trajectories": size(run.trajectory_files()),
                               "checkpoints": size(out["checkpoints"])}
    return out
