"""The synchronous rollout flow's role shells: the actor loop and the learner loop. Compute lives in
sampler/algos/storage, the shared kit in :mod:`hpcmarl.roles.common`.

The synchronous rollout flow (IPPO/MAPPO): each update the learner sends policy version v to its
actors, every actor collects T steps x E envs with v and sends one unroll record back, learners run
PPO with gradients averaged across learners, and version v+1 goes out.
"""
from __future__ import annotations

import os
import time
from typing import Dict

import numpy as np
import torch

from hpcmarl import storage
from hpcmarl.algos import base as algos
from hpcmarl.comm import protocol
from hpcmarl.comm.spec import CMD_PREEMPTED, CMD_STOP, WEIGHT_INDEX, Record, unroll_spec, weights_spec
from hpcmarl.models import checksum
from hpcmarl.roles.common import ACTOR_TIMERS, M, RunLog, actor_seed, inject_fault, make_sampler, traj_path

# --------------------------------------------------------------------------------------------------
# actor
# --------------------------------------------------------------------------------------------------
def actor_main(ctx) -> None:
    cfg, world, layout = ctx.cfg, ctx.world, ctx.layout
    idx = layout.actor_index(ctx.rank)
    learner = layout.learner_of(idx)
    league = None
    if layout.league:
        from hpcmarl.roles.league import ActorLeague

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


def learner_main(ctx) -> None:
    from hpcmarl.comm.collective import Collective

    cfg, layout = ctx.cfg, ctx.layout
    spec = ctx.env_spec
    league, gi = None, 0
    if layout.league:  # gradients stay inside the learner group; run bookkeeping spans every learner
        from hpcmarl.league.server import TABLES
        from hpcmarl.roles.league import LearnerLeague

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
