"""Recorded episodes of a run's trajectory files (``trajectories/actor-NNNNN.h5``): a lazy per-episode iterator,
the :class:`Trajectories` view of a run and per-agent statistics. The files are found, checked and scanned by
:mod:`hpcmarl.analysis.trajectory_index` (which also builds the virtual-dataset index over them).

Everything here only reads the actor files (read-only; SWMR when a writer still has them open), so it can
be used on a running job. A file being appended to is read as far as it is complete at opening time:
``/steps`` up to the common row count of its columns, ``/episodes`` up to the last episode whose steps
are all present.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from hpcmarl.analysis.trajectory_index import _Opened, _read, _Source, actor_files, build_index
from hpcmarl.storage.files import check_read

_BLOCK_ROWS = 1 << 16  # steps rows read at once by the iterator and the statistics


# --------------------------------------------------------------------------------------------------
# reading episodes' steps
# --------------------------------------------------------------------------------------------------
def _episode_table(src: _Source) -> Dict[str, np.ndarray]:
    check_read(src.path, f"/episodes ({src.n_episodes:,} rows)", src.episodes.values(), src.n_episodes)
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
        check_read(src.path, f"/steps rows {lo:,}..{hi:,} (episode {int(eps['episode'][order[i]])})",
                   [src.steps[c] for c in columns], hi - lo)
        data = {c: _read(src.path, src.steps[c], lo, hi) for c in columns}
        yield lo, data, order[i:j]
        i = j


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
