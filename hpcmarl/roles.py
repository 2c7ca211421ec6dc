"""MPI role shells: the actor loop and the learner loop. Compute lives in sampler/algos/storage.

The synchronous rollout flow (IPPO/MAPPO): each update the learner sends policy version v to its
actors, every actor collects T steps x E envs with v and sends one unroll record back, learners run
PPO with gradients averaged across learners, and version v+1 goes out.
"""
from __future__ import annotations

import collections
import os
import sys
import time
from typing import Dict, List, Optional

import numpy as np
import torch

from hpcmarl import protocol, storage
from hpcmarl.algos import base as algos
from hpcmarl.algos.base import uses_state
from hpcmarl.envs import VecEnv
from hpcmarl.models import checksum, make_inference
from hpcmarl.sampler import Sampler
from hpcmarl.spec import CMD_PREEMPTED, CMD_STOP, META_INDEX, WEIGHT_INDEX, Record, unroll_spec, weights_spec

M = META_INDEX
SIGNAL_REASON = "stop signal received"
ACTOR_TIMERS = ("t_env", "t_infer", "t_wait", "t_send")  # unroll meta slots, logged as time/actor_*


def inject_fault(ctx, update: int) -> None:
    """Failure injection for tests: ``HPCMARL_INJECT_FAULT=<rank>:<raise|hang|exit>:<update>``."""
    spec = os.environ.get("HPCMARL_INJECT_FAULT")
    if not spec:
        return
    rank, kind, at = spec.split(":")
    if int(rank) != ctx.rank or update != int(at):
        return
    if kind == "raise":
        raise RuntimeError(f"injected fault on rank {ctx.rank} at update {update}")
    if kind == "hang":
        time.sleep(10 ** 6)
    if kind == "exit":
        os._exit(7)


def actor_seed(base: int, actor_index: int, start_update: int) -> int:
    return (base * 1_000_003 + actor_index * 10_007 + start_update * 101) % (2 ** 31)


def make_venv(ctx, actor_index: int, seed: int) -> VecEnv:
    """The actor's env copies, with its variant from ``actors.variants`` (obs/reward scale, env kwargs)."""
    cfg = ctx.cfg
    variants = cfg.actors.variants
    v = variants[actor_index % len(variants)] if variants else {}
    scale = float(v.get("obs_scale", 1.0))
    return VecEnv(cfg.env.name, cfg.env.num_envs, seed, {**cfg.env.kwargs, **v.get("env_kwargs", {})}, cfg.policy_map,
                  obs_transform=(lambda o: o * scale) if scale != 1.0 else None, with_state=uses_state(cfg.algo),
                  reward_scale=float(v.get("reward_scale", 1.0)), on_error=cfg.actors.env_errors,
                  max_errors=cfg.actors.max_env_errors)


def make_sampler(ctx, actor_index: int, traj_path: Optional[str], league=None):
    """Env copies + inference policy + trajectory writer of one actor (no MPI). ``league``: a callable
    ``(policy) -> ActorLeague`` in league mode, whose member bank plays the seats the policy does not."""
    cfg = ctx.cfg
    seed = actor_seed(cfg.seed, actor_index, ctx.start_update)
    torch.manual_seed(seed)
    if league is not None:
        from hpcmarl.league.seats import SeatVecEnv
        from hpcmarl.league_roles import league_spec

        spec = league_spec(cfg, ctx.layout.group_of(ctx.rank))
        policy = make_inference(spec, cfg.algo)
        client = league(policy)
        g = cfg.league.groups[client.gi]
        venv = SeatVecEnv(cfg.env.name, cfg.env.num_envs, seed, cfg.env.kwargs, cfg.policy_map, g.policy_group, g.name,
                          cfg.league.seats, client.choose, client.bank)
    else:
        venv = make_venv(ctx, actor_index, seed)
        policy = make_inference(venv.spec, cfg.algo)
    uspec = unroll_spec(venv.spec, cfg.algo.unroll_length, cfg.env.num_envs)
    sampler = Sampler(venv, policy, uspec, cfg.algo.unroll_length)
    traj = None
    if traj_path is not None:
        traj = storage.TrajectoryWriter(traj_path, venv.spec, cfg.env.num_envs, cfg.output.trajectory_fraction,
                                        seed, resume=ctx.start_update > 0, flush_s=cfg.output.flush_s,
                                        attrs={"actor": actor_index, "env": cfg.env.name})
    return sampler, traj


def traj_path(ctx, actor_index: int) -> Optional[str]:
    if not ctx.cfg.output.trajectories:
        return None
    return os.path.join(ctx.run_dir, "trajectories", f"actor-{actor_index:05d}.h5")


# --------------------------------------------------------------------------------------------------
# actor
# --------------------------------------------------------------------------------------------------
def actor_main(ctx) -> None:
    cfg, world, layout = ctx.cfg, ctx.world, ctx.layout
    idx = layout.actor_index(ctx.rank)
    learner = layout.learner_of(idx)
    league = None
    if layout.league:
        from hpcmarl.league_roles import ActorLeague

        def make_client(policy):
            nonlocal league
            league = ActorLeague(ctx, idx, policy, actor_seed(cfg.seed + 1, idx, ctx.start_update))
            return league
    sampler, traj = make_sampler(ctx, idx, traj_path(ctx, idx), make_client if layout.league else None)
    urec = sampler.spec.alloc()
    ctx.agree_startup()
    hello = protocol.recv_control(world, learner, cfg.runtime.startup_timeout_s)
    wrec = weights_spec(hello["n_weights"]).alloc()
    bits = np.zeros(sampler.policy.mask_bytes(), np.uint8) if getattr(cfg.algo, "sparsity", 0) > 0 else None
    if hello.get("rng") is not None:
        torch.set_rng_state(torch.from_numpy(np.asarray(hello["rng"], np.uint8)))
    timeout = cfg.runtime.timeout_s
    t_send = 0.0
    while True:
        t0 = time.perf_counter()
        version, command = protocol.recv_weights(world, learner, wrec, timeout)
        if command in (CMD_STOP, CMD_PREEMPTED):
            ctx.preempted = command == CMD_PREEMPTED
            break
        inject_fault(ctx, version)
        mask_version = int(wrec["meta"][WEIGHT_INDEX["mask_version"]])
        if bits is not None and mask_version != sampler.policy.mask_version:  # sparse: the masks changed
            protocol.recv_masks(world, learner, bits, timeout)
            sampler.policy.set_masks(bits, mask_version)
        if os.environ.get("HPCMARL_INJECT_FAULT") != f"{ctx.rank}:stale:{version}":
            sampler.policy.load(wrec["params"], version)
        sampler.policy.epsilon = float(wrec["meta"][WEIGHT_INDEX["epsilon"]])
        t_wait = time.perf_counter() - t0
        sampler.collect(urec)
        meta = urec["meta"]
        meta[M["actor"]] = idx
        meta[M["t_wait"]] = t_wait
        meta[M["stop_requested"]] = float(ctx.stop_requested())
        meta[M["t_send"]] = t_send
        req = protocol.send_unroll(world, learner, urec)
        if traj is not None:  # only reads the buffer, so it overlaps the send and the learner's update
            traj.add_unroll(urec, urec["env_done"], version)
        if league is not None:  # results of the finished episodes, the next opponents (overlaps the update)
            league.collect_results(sampler.finished)
            league.exchange()
        t1 = time.perf_counter()
        protocol.wait_buffer(req, timeout, f"learner rank {learner} to take an unroll")
        t_send = time.perf_counter() - t1  # reported with the next unroll
    discarded = int((sampler.in_flight() > 0).sum())
    if traj is not None:
        traj.close()
    sampler.venv.close()
    if league is not None:
        league.bye()
    protocol.send_bye(world, learner, {"discarded": discarded}, timeout)


# --------------------------------------------------------------------------------------------------
# learner
# --------------------------------------------------------------------------------------------------
class MPIActorLink:
    """An actor rank as seen by its learner."""

    def __init__(self, ctx, rank: int, uspec):
        self.ctx, self.rank = ctx, rank
        self.rec = uspec.alloc()
        self.req = None
        self.send_req = None
        self.masks = None  # (bits, request) of the last masks sent

    def hello(self, info: dict):
        protocol.send_control(self.ctx.world, self.rank, info, self.ctx.cfg.runtime.startup_timeout_s)

    def send_masks(self, bits: np.ndarray, mask_version: int):
        if self.masks is not None:
            protocol.wait_buffer(self.masks[1], self.ctx.cfg.runtime.timeout_s, f"actor rank {self.rank} to take masks")
        self.masks = (bits, protocol.send_masks(self.ctx.world, self.rank, bits))

    def send_weights(self, wrec: Record, version: int):
        self.send_req = protocol.send_weights(self.ctx.world, self.rank, wrec, version)
        self.req = protocol.post_recv_unroll(self.ctx.world, self.rank, self.rec)

    def recv_unroll(self) -> Record:
        protocol.wait_buffer(self.req, self.ctx.cfg.runtime.timeout_s, f"an unroll from actor rank {self.rank}")
        self.send_req.Wait()
        return self.rec

    def stop(self, wrec: Record, version: int, preempted: bool) -> dict:
        req = protocol.send_stop(self.ctx.world, self.rank, wrec, version, preempted)
        bye = protocol.recv_bye(self.ctx.world, self.rank, self.ctx.cfg.runtime.timeout_s)
        req.Wait()
        if self.masks is not None:
            self.masks[1].Wait()  # taken with the weights that announced them
        return bye


class LocalActorLink:
    """Serial mode: the learner steps its own environments in-process through the same interface."""

    def __init__(self, ctx, uspec):
        self.ctx = ctx
        self.sampler, self.traj = make_sampler(ctx, 0, traj_path(ctx, 0))
        self.rec = uspec.alloc()
        self.rank = 0

    def hello(self, info: dict):
        if info.get("rng") is not None:
            torch.set_rng_state(torch.from_numpy(np.asarray(info["rng"], np.uint8)))

    def send_masks(self, bits: np.ndarray, mask_version: int):
        self.sampler.policy.set_masks(bits, mask_version)

    def send_weights(self, wrec: Record, version: int):
        self.sampler.policy.load(wrec["params"], version)
        self.sampler.policy.epsilon = float(wrec["meta"][WEIGHT_INDEX["epsilon"]])

    def recv_unroll(self) -> Record:
        self.sampler.collect(self.rec)
        self.rec["meta"][M["actor"]] = 0
        self.rec["meta"][M["stop_requested"]] = float(self.ctx.stop_requested())
        if self.traj is not None:
            self.traj.add_unroll(self.rec, self.rec["env_done"], int(self.rec["meta"][M["version"]]))
        return self.rec

    def stop(self, wrec: Record, version: int, preempted: bool) -> dict:
        discarded = int((self.sampler.in_flight() > 0).sum())
        if self.traj is not None:
            self.traj.close()
        self.sampler.venv.close()
        return {"discarded": discarded}


class Progress:
    """The lead learner's console line: every ``interval`` s, ``\\r``-refreshed on a terminal."""

    def __init__(self, interval: float, total_steps: int, groups: List[str]):
        self.interval, self.total, self.groups = interval, total_steps, groups
        self.tty = sys.stdout.isatty()
        self.last = 0.0

    def line(self, s: dict) -> str:
        rets = " ".join(f"{g} {s['return_window/' + g]:.1f}" if not np.isnan(s["return_window/" + g]) else f"{g} n/a"
                        for g in self.groups)
        pct = 100.0 * s["env_steps"] / self.total if self.total else 0.0
        return (f"[hpcmarl] upd {int(s['update']):>6} | steps {int(s['env_steps']):>11,} ({pct:5.1f}%) | "
                f"{s['sps']:>8,.0f} sps | return {rets} | lag {s['lag_mean']:.2f} | {s['wall_time']:7.0f}s")

    def maybe(self, s: dict, force: bool = False):
        now = time.monotonic()
        if force or now - self.last >= self.interval:
            self.last = now
            bar = ""
            if self.tty:  # a bar for people watching; plain lines either way, so launchers' logs stay clean
                fill = int(20 * min(1.0, s["env_steps"] / max(1, self.total)))
                bar = " [" + "#" * fill + "." * (20 - fill) + "]"
            print(self.line(s) + bar, flush=True)


class RunLog:
    """Learner bookkeeping both data flows share: counters, the stop vote, the lead learner's run.h5
    writer, the episode-return window, the progress line, the target check and the closing line.

    Episode rows are ``(actor, env, length, policy_version, return per group...)``."""

    def __init__(self, ctx, coll, groups: List[str], resume_attrs: Optional[dict] = None, tables: Optional[dict] = None):
        cfg = ctx.cfg
        self.ctx, self.cfg, self.coll, self.groups = ctx, cfg, coll, groups
        self.lead = ctx.rank == 0
        self.counters = {"update": 0, "env_steps": 0, "episodes": 0, "wall_time": 0.0, "discarded_episodes": 0,
                         "env_errors": 0}
        self.resume_rows = None
        self.tables = tables or {}
        if resume_attrs is not None:
            for k in self.counters:
                self.counters[k] = type(self.counters[k])(resume_attrs.get(k, self.counters[k]))  # (older: no env_errors)
            self.resume_rows = {k[len("rows_"):]: int(v) for k, v in resume_attrs.items() if k.startswith("rows_")}
        self.window = {g: collections.deque(maxlen=cfg.output.episode_window) for g in groups}
        self.progress = Progress(cfg.output.progress_s, cfg.train.total_env_steps, groups)
        self.writer: Optional[storage.RunWriter] = None
        self.reached = False
        self.row: Optional[dict] = None
        self.reasons: List[str] = []
        self.wall0 = time.monotonic() - self.counters["wall_time"]
        self.session0 = time.monotonic()
        self.session_steps0 = self.counters["env_steps"]
        self.last_ckpt = self.counters["update"]

    def open(self, banner: str = "") -> None:
        """Lead: create (or reopen on resume) run.h5 and refill the return window from it."""
        if not self.lead:
            return
        ctx = self.ctx
        self.writer = w = storage.RunWriter(os.path.join(ctx.run_dir, "run.h5"), ctx.run_attrs(), self.groups,
                                            resume_rows=self.resume_rows, flush_s=self.cfg.output.flush_s,
                                            tables=self.tables)
        w.f.attrs["resumed_from"] = ctx.resume_path or ""
        resumed = (f" (resumed from {os.path.basename(ctx.resume_path)}, update {self.counters['update']})"
                   if ctx.resume_path else "")
        print(f"[hpcmarl] run directory: {os.path.abspath(ctx.run_dir)}{banner}{resumed}", flush=True)
        if w.episodes.rows:
            k = min(w.episodes.rows, self.cfg.output.episode_window)
            for g in self.groups:
                vals = w.episodes.cols[f"return/{g}"][w.episodes.rows - k:]
                self.window[g].extend(vals[np.isfinite(vals)])

    def advance(self, env_steps: int, episodes: int, env_errors: int = 0) -> None:
        c = self.counters
        c["update"] += 1
        c["env_steps"] += env_steps
        c["episodes"] += episodes
        c["env_errors"] += env_errors  # env copies re-created after an exception (actors.env_errors=reset)
        c["wall_time"] = time.monotonic() - self.wall0

    def base_row(self) -> dict:
        c = self.counters
        return {"update": c["update"], "env_steps": c["env_steps"], "wall_time": c["wall_time"], "episodes": c["episodes"],
                "env_errors": c["env_errors"], "sps": (c["env_steps"] - self.session_steps0) / max(1e-9, time.monotonic() - self.session0)}

    def vote(self, signalled: bool) -> str:
        """Stop reason agreed by every learner ('' = go on). Each evaluates the same reduced counters;
        clocks, signals and the lead's target check differ, hence the MAX vote."""
        cfg, c = self.cfg, self.counters
        reasons = []
        if c["env_steps"] >= cfg.train.total_env_steps:
            reasons.append("total_env_steps reached")
        if cfg.train.max_updates and c["update"] >= cfg.train.max_updates:
            reasons.append("max_updates reached")
        if cfg.train.max_wall_s and time.monotonic() - self.session0 >= cfg.train.max_wall_s:
            reasons.append("max_wall_s reached")
        if self.lead and self.reached:
            reasons.append("target_return reached")
        if signalled or self.ctx.stop_requested():
            reasons.append(SIGNAL_REASON)
        self.reasons = reasons
        if self.coll.max_small(np.array([float(bool(reasons))]))[0] > 0:
            return ", ".join(reasons) or "another learner voted to stop"
        return ""

    def log(self, row: dict, ep_rows: list, table_rows: Optional[Dict[str, list]] = None) -> None:
        """Gather every learner's episode rows (and rows of the flow's further tables: name -> list of
        tuples in column order); the lead writes them and the metrics row, updates the window, the
        progress line and the target check."""
        self.row = row
        parts = self.coll.gather(ep_rows)
        extra = {name: self.coll.gather(rows) for name, rows in (table_rows or {}).items()}
        if not self.lead:
            return
        for name, tparts in extra.items():
            flat_t = [r for part in tparts for r in part]
            if flat_t:
                arr = np.array(flat_t, dtype=np.float64)
                self.writer.append(name, {col: arr[:, i] for i, col in enumerate(self.tables[name])})
        c, groups = self.counters, self.groups
        flat = [e for part in parts for e in part]
        if flat:
            arr = np.array(flat, dtype=np.float64)
            cols = {"actor": arr[:, 0], "env": arr[:, 1], "length": arr[:, 2], "policy_version": arr[:, 3],
                    "update": np.full(len(arr), c["update"]), "env_steps": np.full(len(arr), c["env_steps"]),
                    "wall_time": np.full(len(arr), c["wall_time"])}
            for gi, g in enumerate(groups):
                vals = arr[:, 4 + gi]
                ok = np.isfinite(vals)  # league mode: an episode has the return of its own group only
                cols[f"return/{g}"] = vals
                self.window[g].extend(vals[ok])
                if ok.any():
                    row[f"return/{g}"] = float(vals[ok].mean())
            self.writer.add_episodes(cols)
            row["episode_length"] = float(arr[:, 2].mean())
        for g in groups:
            row[f"return_window/{g}"] = float(np.mean(self.window[g])) if self.window[g] else float("nan")
            row.setdefault(f"return/{g}", float("nan"))
        row.setdefault("episode_length", float("nan"))
        self.writer.log_metrics(row)
        self.progress.maybe(row)
        target = self.cfg.train.target_return
        if target is not None:
            self.reached = all(len(self.window[g]) >= self.cfg.output.episode_window  # a full window, not a lucky few
                               and np.mean(self.window[g]) >= target for g in groups)

    def checkpoint_due(self, stop_reason: str) -> bool:
        return not stop_reason and self.counters["update"] - self.last_ckpt >= self.cfg.output.checkpoint_every

    def save_checkpoint(self, param_checksum: float, make_arrays, version: int, group: int = 0,
                        extra_attrs: Optional[dict] = None) -> None:
        """Every learner: its parameter checksum is compared with those of its learner group (the run aborts
        if they differ); the lead writes ``make_arrays()`` with the counters, the run.h5 row counts, ``version``
        and ``extra_attrs``."""
        pairs = self.coll.gather((group, param_checksum))
        c = self.counters
        if self.lead:
            sums = [s for _, s in pairs]
            for g in {g for g, _ in pairs}:
                if len({s for h, s in pairs if h == g}) != 1:
                    raise RuntimeError(f"learners hold different parameters at update {c['update']}: checksums {pairs}")
            attrs = dict(c)
            attrs.update(extra_attrs or {})
            attrs.update({f"rows_{name}": n for name, n in self.writer.rows().items()})
            attrs.update(learner_param_checksums=[float(x) for x in sums], config=self.ctx.config_yaml,
                         algo=self.cfg.algo.name, env=self.cfg.env.name, groups=self.groups, version=version)
            storage.save_checkpoint(os.path.join(self.ctx.run_dir, "checkpoints"), c["update"], make_arrays(), attrs,
                                    self.cfg.output.keep_checkpoints)
        self.last_ckpt = c["update"]

    def preempted(self) -> bool:
        """A signal stopped an unfinished run (no learner saw the run's end): exit status 75 so job
        scripts requeue (see slurm/)."""
        seen = self.coll.max_small(np.array([float(SIGNAL_REASON in self.reasons),
                                             float(any(r != SIGNAL_REASON for r in self.reasons))]))
        return bool(seen[0] > 0 and seen[1] == 0)

    def final_checkpoint_due(self) -> bool:
        return self.counters["update"] != self.last_ckpt or not self.ctx.resume_path  # a resumed, finished run writes nothing

    def finish(self, stop_reason: str, summary: str) -> None:
        if not self.lead:
            return
        self.writer.close()
        if self.row is not None:
            self.progress.maybe(self.row, force=True)
        c = self.counters
        rets = ", ".join(f"{g} {np.mean(self.window[g]) if self.window[g] else float('nan'):.2f}" for g in self.groups)
        if "target_return reached" in stop_reason:
            print(f"[hpcmarl] reached the target return {self.cfg.train.target_return} ({rets} over the last "
                  f"{self.cfg.output.episode_window} episodes) at {c['env_steps']:,} env steps in {c['wall_time']:.0f}s",
                  flush=True)
        elif self.cfg.train.target_return is not None:
            print(f"[hpcmarl] the target return {self.cfg.train.target_return} was not reached ({stop_reason})", flush=True)
        print(f"[hpcmarl] finished ({stop_reason}): {c['update']} updates, {c['env_steps']:,} env steps, "
              f"{c['episodes']:,} episodes in {c['wall_time']:.1f}s; {summary}; mean return over the last "
              f"{self.cfg.output.episode_window} episodes: {rets}; outputs in {os.path.abspath(self.ctx.run_dir)}",
              flush=True)


def learner_main(ctx) -> None:
    from hpcmarl.collective import Collective

    cfg, layout = ctx.cfg, ctx.layout
    spec = ctx.env_spec
    league, gi = None, 0
    if layout.league:  # gradients stay inside the learner group; run bookkeeping spans every learner
        from hpcmarl.league.server import TABLES
        from hpcmarl.league_roles import LearnerLeague

        gi = layout.group_of(ctx.rank)
        coll = Collective(ctx.group_comm, cfg.learner.backend)
        ctrl = Collective(ctx.learner_comm, "mpi")
        league = LearnerLeague(ctx, gi, coll.rank)
        groups, tables = [g.name for g in cfg.league.groups], TABLES
    else:
        coll = ctrl = Collective(ctx.learner_comm, cfg.learner.backend)
        groups, tables = [g.name for g in spec.groups], None
    learner = algos.get(cfg.algo.name).make_learner(spec, cfg.algo, ctx.device, seed=cfg.seed + 7919 * ctx.rank,
                                                    init_seed=cfg.seed + 1009 * gi)
    uspec = unroll_spec(spec, cfg.algo.unroll_length, cfg.env.num_envs)
    if layout.serial:
        links = [LocalActorLink(ctx, uspec)]
    else:
        links = [MPIActorLink(ctx, r, uspec) for r in layout.actors_of(ctx.rank)]
    prefix = f"group/{groups[gi]}/" if league else ""

    # ---- state: fresh or from the checkpoint chosen in pre-flight ------------------------------------
    actor_rng: Dict[int, np.ndarray] = {}
    attrs = None
    if ctx.resume_path:
        arrays, attrs = storage.load_checkpoint(ctx.resume_path)
        learner.load_state_arrays({k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)})
        rng = arrays.get(f"rng/learner-{ctx.rank:05d}/torch")
        if rng is not None:
            torch.set_rng_state(torch.from_numpy(np.asarray(rng, np.uint8)))
        mine = {layout.actor_index(r) for r in layout.actors_of(ctx.rank)} if not layout.serial else {0}
        for k, v in arrays.items():
            if k.startswith("rng/actor-") and int(k.split("/")[1].split("-")[1]) in mine:
                actor_rng[int(k.split("/")[1].split("-")[1])] = v
    log = RunLog(ctx, ctrl, groups, attrs, tables)
    counters = log.counters
    coll.broadcast_params(learner.params)
    ctx.agree_startup()
    wrec = weights_spec(learner.policy_flat().size).alloc()
    for link in links:
        idx = layout.actor_index(link.rank) if not layout.serial else 0
        link.hello({"rng": actor_rng.get(idx), "n_weights": wrec["params"].size})
    log.open()

    explore = getattr(learner, "exploration", None)  # value-based learners hand out epsilon
    sent_masks = [None]
    version = counters["update"]

    def checkpoint():
        learner_rng = ctrl.gather(torch.get_rng_state().numpy())
        a_rng = ctrl.gather(actor_rng)
        # league mode: every group's lead contributes its state (parameters and optimizer under group/<name>/,
        # the policy alone under policy/<name> for `hpcmarl match`)
        states = ctrl.gather((gi, learner.state_arrays(), learner.policy_flat()) if league and coll.rank == 0 else None)

        def arrays():
            out = {} if league else learner.state_arrays()
            for part in (states if league else []):
                if part is not None:
                    g, st, flat = part
                    out.update({f"group/{groups[g]}/{k}": v for k, v in st.items()})
                    out[f"policy/{groups[g]}"] = flat
            if league:
                out.update(league.state)
            for i, st in enumerate(learner_rng):
                out[f"rng/learner-{i:05d}/torch"] = st
            for part in a_rng:
                for a, st in part.items():
                    out[f"rng/actor-{a:05d}/torch"] = st
            return out

        log.save_checkpoint(checksum(np.concatenate([p.detach().cpu().numpy().ravel() for p in learner.params])),
                            arrays, version, group=gi,
                            extra_attrs=league.policy_meta(version) if league and ctx.rank == 0 else None)

    def send_weights() -> float:
        t = time.perf_counter()
        wrec["params"][:] = learner.policy_flat()
        wrec["meta"][WEIGHT_INDEX["epsilon"]] = explore(counters["env_steps"]) if explore else 0.0
        mask_version = getattr(learner, "mask_version", None)  # sparse learners: values of active weights only
        if mask_version is not None:
            wrec["meta"][WEIGHT_INDEX["mask_version"]] = mask_version
            if mask_version != sent_masks[0]:
                bits = learner.policy_masks()
                for link in links:
                    link.send_masks(bits, mask_version)
                sent_masks[0] = mask_version
        for link in links:
            link.send_weights(wrec, version)
        return time.perf_counter() - t

    signalled = False
    stop_reason = log.vote(False)
    t_send = send_weights() if not stop_reason else 0.0
    while not stop_reason:
        # ---- one synchronous round: unrolls made with `version` -> update ------------------------------
        inject_fault(ctx, version)
        want = checksum(wrec["params"])
        t1 = time.perf_counter()
        recs = [link.recv_unroll() for link in links]
        t2 = time.perf_counter()
        for r in recs:
            if int(r["meta"][M["version"]]) != version or r["meta"][M["param_checksum"]] != want:
                raise RuntimeError(f"actor {int(r['meta'][M['actor']])} sent an unroll made with weights "
                                   f"version {int(r['meta'][M['version']])} (checksum {r['meta'][M['param_checksum']]}), "
                                   f"expected version {version} (checksum {want})")
        coll.t_allreduce = 0.0
        stats = learner.update(recs, coll.reduce_grads, coll.sum_small, env_steps=counters["env_steps"])
        t3 = time.perf_counter()

        # ---- take what bookkeeping needs out of the receive buffers, reduce counters -----------------
        ep_rows = []
        for r in recs:
            n = int(r["meta"][M["n_episodes"]])
            for e in r["episodes"][:n]:
                rets = [e[2] if j == gi else np.nan for j in range(len(groups))] if league else e[2:]
                ep_rows.append((int(r["meta"][M["actor"]]), int(e[0]), int(e[1]), version, *rets))
        actor_rng.update({int(r["meta"][M["actor"]]): r["rng"].copy() for r in recs})
        local = np.array([sum(r["meta"][M["env_steps"]] for r in recs), len(ep_rows),
                          sum(r["meta"][M["t_collect"]] for r in recs), len(recs), t3 - t2, t2 - t1,
                          coll.t_allreduce, t_send,
                          float(any(r["meta"][M["stop_requested"]] for r in recs))]
                         + [sum(r["meta"][M[k]] for r in recs) for k in ACTOR_TIMERS]
                         + [sum(r["meta"][M["env_errors"]] for r in recs)])
        tot = ctrl.sum_small(local)  # counters and timings over every learner
        # the algorithm's statistics: mean over the learner group (league mode: groups have their own keys,
        # gathered to the lead learner)
        stat_row = dict(zip(sorted(stats), coll.sum_small(np.array([stats[k] for k in sorted(stats)])) / coll.size))
        if league:
            parts = ctrl.gather(stat_row if coll.rank == 0 else {})
            stat_row = {k: v for part in (parts or []) for k, v in part.items()}
        version += 1
        log.advance(int(tot[0]), int(tot[1]), int(tot[-1]))
        signalled = tot[8] > 0

        # ---- decide now and hand out the next version, so actors collect while we write logs ----------
        stop_reason = log.vote(signalled)
        t_send = send_weights() if not stop_reason else 0.0
        table_rows = None
        if league:  # the group's lead reports to the league (snapshots); the lead learner gets /league rows
            want = ctx.rank == 0 and (bool(stop_reason) or log.checkpoint_due(stop_reason))
            got = league.status(counters["update"], version, learner.policy_flat, want, bool(stop_reason))
            table_rows = {name: got.get(name, []) for name in tables}

        row = log.base_row()
        row.update({"lag_mean": 0.0, "lag_max": 0.0,
                    "time/collect": tot[2] / max(1, tot[3]), "time/update": tot[4] / ctrl.size,
                    "time/wait_unrolls": tot[5] / ctrl.size, "time/allreduce": tot[6] / ctrl.size,
                    "time/send_weights": tot[7] / ctrl.size})
        for i, k in enumerate(ACTOR_TIMERS):  # actor-side phases, mean per unroll
            row[f"time/actor_{k[2:]}"] = tot[9 + i] / max(1, tot[3])
        row.update(stat_row)
        log.log(row, ep_rows, table_rows)
        if log.checkpoint_due(stop_reason):
            checkpoint()

    # ---- shutdown: final checkpoint, stop actors, close files ---------------------------------------
    ctx.preempted = log.preempted()
    byes = [link.stop(wrec, version, ctx.preempted) for link in links]
    discarded = ctrl.sum_small(np.array([sum(b["discarded"] for b in byes)]))[0]
    counters["discarded_episodes"] += int(discarded)
    if log.final_checkpoint_due():
        checkpoint()
    summary = f"{int(discarded)} episode(s) in flight discarded"
    if league:
        snaps = ctrl.sum_small(np.array([league.snapshots]))[0]
        summary += f"; {int(snaps)} snapshot(s) added to the pool this session"
    log.finish(stop_reason, summary)
    coll.close()
