"""The synchronous rollout flow's learner side (its actor side: :mod:`hpcmarl.roles.actor_work`). Compute lives in
sampler/algos/storage, the shared kit in :mod:`hpcmarl.roles.common`, actors are built in :mod:`hpcmarl.actors`.

The synchronous rollout flow (IPPO/MAPPO): each update the learner sends policy version v to its
actors, every actor collects T steps x E envs with v and sends one unroll record back, learners run
PPO with gradients averaged across learners, and version v+1 goes out.
"""
from __future__ import annotations

import time
from typing import Dict, Optional

import numpy as np
import torch

from hpcmarl import compiled
from hpcmarl.algos import base as algos
from hpcmarl.comm import protocol
from hpcmarl.comm.spec import EPISODE_RETURNS, WEIGHT_INDEX, unroll_spec, weights_spec
from hpcmarl.models import checksum
from hpcmarl.roles.actor_work import RolloutActor, run_actor
from hpcmarl.roles.common import ACTOR_TIMERS, M, unroll_episodes
from hpcmarl.roles.links import ActorLink, LocalLink
from hpcmarl.roles.loop import LearnerSide, Round, run_learner
from hpcmarl.sampler import sleep_for


# --------------------------------------------------------------------------------------------------
# actor
# --------------------------------------------------------------------------------------------------
def own_arrays(learner) -> Dict[str, np.ndarray]:
    """A learner's state arrays that differ between learners (``rng/…``, ``local/…``:
    :class:`hpcmarl.algos.base.Learner`)."""
    return {k: v for k, v in learner.state_arrays().items() if k.startswith(("rng/", "local/"))}


def actor_main(ctx) -> None:
    run_actor(ctx, RolloutActor(ctx))


# --------------------------------------------------------------------------------------------------
# learner
# --------------------------------------------------------------------------------------------------
class Solo:
    """The synchronous flow's learner groups without a league: one group of learners trains every env group.
    Its counterpart with a league is :class:`hpcmarl.roles.league.LearnerLeague` (the same hooks)."""
    gi, prefix, tables, restarts = 0, "", None, False

    def __init__(self, ctx):
        from hpcmarl.comm.collective import Collective

        self.coll = self.ctrl = Collective(ctx.learner_comm, ctx.cfg.learner.backend)
        self.groups = [g.name for g in ctx.env_spec.groups]

    def returns(self, episode) -> list:
        """The returns of a row of a record's ``episodes`` (hpcmarl.comm.spec.EPISODE)."""
        return list(episode[EPISODE_RETURNS])

    def stats(self, row: dict) -> dict:
        return row

    def states(self, learner):
        return learner.state_arrays

    def attrs(self, version: int) -> Optional[dict]:
        return None

    def rows(self, update: int, version: int, policy_flat, stop_reason: str, checkpoint_due: bool) -> Optional[dict]:
        return None

    def summary(self) -> str:
        return ""

    def restart(self) -> bool:
        return False


class RolloutFlow(LearnerSide):
    """The synchronous rollout flow in the learner loop: one round = every actor's unroll made with
    ``version`` -> one update -> version + 1. ``groups``: the learner-group hooks (:class:`Solo`, or
    :class:`hpcmarl.roles.league.LearnerLeague` in league mode)."""

    def __init__(self, ctx, groups):
        cfg, layout, spec = ctx.cfg, ctx.layout, ctx.env_spec
        self.ctx, self.cfg, self.layout, self.g = ctx, cfg, layout, groups
        self.coll, self.ctrl, self.groups, self.tables = groups.coll, groups.ctrl, groups.groups, groups.tables
        self.learner = algos.get(cfg.algo.name).make_learner(spec, cfg.algo, ctx.device,
                                                             seed=cfg.seed + 7919 * ctx.rank,
                                                             init_seed=cfg.seed + 1009 * groups.gi)
        compiled.prepare(self.learner, cfg, layout.actors, say=print if ctx.rank == 0 else (lambda msg: None))
        uspec = unroll_spec(spec, cfg.algo.unroll_length, cfg.env.num_envs, algos.rnn_hidden(cfg.algo),
                            cfg.env.parts)
        if layout.serial:
            self.links = [LocalLink(ctx, uspec.alloc(), numbered=True)]
        else:
            self.links = [ActorLink(ctx, r, protocol.post_recv_unroll, uspec.alloc())
                          for r in layout.actors_of(ctx.rank)]
        self.actor_rng: Dict[int, Dict[str, np.ndarray]] = {}
        self.wrec = weights_spec(self.learner.policy_flat().size).alloc()
        self.explore = getattr(self.learner, "exploration", None)  # value-based learners hand out epsilon
        self.sent_masks = None
        self.t_send = 0.0
        # actors.overlap: unrolls of the previous version are accepted too (policy lag <= 1); checksums by version
        self.max_lag = 1 if cfg.actors.overlap and not layout.serial else 0
        self.sent_checksums: Dict[int, float] = {}
        # the initial parameters, optimizer and statistics (a restart broadcasts the group lead's parameters)
        self.initial = {k: np.array(v, copy=True) for k, v in self.learner.state_arrays().items()
                        if not k.startswith(("rng/", "local/"))} if groups.restarts else None
        self.restart_pending = False

    def load(self, arrays):
        layout, prefix = self.layout, self.g.prefix
        state = {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
        mine = f"learners/{self.ctx.rank:05d}/"  # this learner's own state arrays (rng/…, local/…)
        state.update({k[len(mine):]: v for k, v in arrays.items() if k.startswith(mine)})
        self.learner.load_state_arrays(state)
        rng = arrays.get(f"rng/learner-{self.ctx.rank:05d}/torch")
        if rng is not None:
            torch.set_rng_state(torch.from_numpy(np.asarray(rng, np.uint8)))
        mine = {layout.actor_index(r) for r in layout.actors_of(self.ctx.rank)} if not layout.serial else {0}
        for k, v in arrays.items():  # rng/actor-<index>/<torch | env_seeds>
            if k.startswith("rng/actor-") and int(k.split("/")[1].split("-")[1]) in mine:
                self.actor_rng.setdefault(int(k.split("/")[1].split("-")[1]), {})[k.split("/")[2]] = v

    def hello(self):
        for link in self.links:
            st = self.actor_rng.get(link.index, {})
            link.hello({"rng": st.get("torch"), "env_seeds": st.get("env_seeds"),
                        "n_weights": self.wrec["params"].size})

    def handout(self):
        t = time.perf_counter()
        learner, wrec = self.learner, self.wrec
        wrec["params"][:] = learner.policy_flat()
        wrec["meta"][WEIGHT_INDEX["epsilon"]] = self.explore(self.log.counters["env_steps"]) if self.explore else 0.0
        mask_version = getattr(learner, "mask_version", None)  # sparse learners: values of active weights only
        if mask_version is not None:
            wrec["meta"][WEIGHT_INDEX["mask_version"]] = mask_version
            if mask_version != self.sent_masks:
                bits = learner.policy_masks()
                for link in self.links:
                    link.send_masks(bits, mask_version)
                self.sent_masks = mask_version
        for link in self.links:
            link.send(wrec, self.version)
            if link.posted is None:  # (a flow that takes only some actors' unrolls keeps the others' posted)
                link.post()
        self.sent_checksums = {v: c for v, c in self.sent_checksums.items() if v >= self.version - self.max_lag}
        self.sent_checksums[self.version] = checksum(wrec["params"])
        self.t_send = time.perf_counter() - t

    def gather(self) -> list:
        """The unrolls this round trains on: every actor's, made with the weights just handed out (a flow built on
        this one may take fewer: examples/backup_flow.py)."""
        recs = [link.wait("an unroll") for link in self.links]
        for link in self.links:
            link.wait_sent()
        return recs

    def round(self) -> Round:
        version, coll, ctrl = self.version, self.coll, self.ctrl
        t1 = time.perf_counter()
        recs = self.gather()
        t2 = time.perf_counter()
        lags = []
        for r in recs:
            v = int(r["meta"][M["version"]])
            if self.sent_checksums.get(v) != r["meta"][M["param_checksum"]] or not 0 <= version - v <= self.max_lag:
                raise RuntimeError(f"actor {int(r['meta'][M['actor']])} sent an unroll made with weights "
                                   f"version {v} (checksum {r['meta'][M['param_checksum']]}), expected version "
                                   f"{version}{' or the one before' if self.max_lag else ''} "
                                   f"(checksums {self.sent_checksums})")
            lags.append(version - v)
        coll.t_allreduce = 0.0
        stats = self.learner.update(recs, coll.reduce_grads if coll.size > 1 else None, coll.sum_small,
                                    env_steps=self.log.counters["env_steps"])
        sleep_for(self.cfg.learner.update_delay_s)  # injected update cost (0: none), counted in time/update
        if self.restart_pending:  # the group lead's initial state on every learner of the group
            self.learner.load_state_arrays(self.initial)
            coll.broadcast_params(self.learner.params)
            self.restart_pending = False
        t3 = time.perf_counter()

        # what bookkeeping needs, taken out of the receive buffers; counters reduced over every learner
        ep_rows = [row for r in recs for row in unroll_episodes(r, self.g.returns)]
        # the actors' random state after these unrolls (torch sampling, env episode seeds): an exact resume
        self.actor_rng.update({int(r["meta"][M["actor"]]): {"torch": r["rng"].copy(),
                                                            "env_seeds": r["env_seeds"].copy()}
                               for r in recs})

        def meta_sum(key):
            return sum(r["meta"][M[key]] for r in recs)

        tot = ctrl.sum_named({"env_steps": meta_sum("env_steps"), "episodes": len(ep_rows),
                              "t_collect": meta_sum("t_collect"), "unrolls": len(recs), "t_update": t3 - t2,
                              "t_wait_unrolls": t2 - t1, "t_allreduce": coll.t_allreduce,
                              "t_send_weights": self.t_send, "lag": sum(lags),
                              "stop": float(any(r["meta"][M["stop_requested"]] for r in recs)),
                              **{f"actor/{k}": meta_sum(k) for k in ACTOR_TIMERS},
                              "env_errors": meta_sum("env_errors")})
        lag_max = ctrl.max_small(np.array([float(max(lags))]))[0] if self.max_lag else 0.0
        # the algorithm's statistics: mean over the learner group
        stat_row = {k: v / coll.size for k, v in coll.sum_named({k: stats[k] for k in sorted(stats)}).items()}
        unrolls = max(1, tot["unrolls"])
        row = {"lag_mean": tot["lag"] / unrolls, "lag_max": lag_max,
               "time/collect": tot["t_collect"] / unrolls, "time/update": tot["t_update"] / ctrl.size,
               "time/wait_unrolls": tot["t_wait_unrolls"] / ctrl.size,
               "time/allreduce": tot["t_allreduce"] / ctrl.size, "time/send_weights": tot["t_send_weights"] / ctrl.size}
        for k in ACTOR_TIMERS:  # actor-side phases, mean per unroll
            row[f"time/actor_{k[2:]}"] = tot[f"actor/{k}"] / unrolls
        row.update(self.g.stats(stat_row))
        self.version += 1
        return Round(int(tot["env_steps"]), int(tot["episodes"]), int(tot["env_errors"]), tot["stop"] > 0, row,
                     ep_rows)

    def rows(self, stop_reason, checkpoint_due):
        out = self.g.rows(self.log.counters["update"], self.version, self.learner.policy_flat, stop_reason,
                          checkpoint_due)
        # league.groups.N.restart: a fresh policy after each snapshot (PSRO's best responses). The actors already
        # collect with the weights just handed out, so the next update trains those; the restart follows it.
        self.restart_pending = self.g.restart()
        return out

    def save(self, log):
        learner, ctrl = self.learner, self.ctrl
        learner_rng = ctrl.gather((torch.get_rng_state().numpy(), own_arrays(learner)))
        a_rng = ctrl.gather(self.actor_rng)
        model = self.g.states(learner)

        def arrays():  # the lead's state (its local/ arrays only under learners/, below), every learner's own arrays
            out = {k: v for k, v in model().items() if not k.startswith("local/") and "/local/" not in k}
            for i, (st, own) in enumerate(learner_rng):
                out[f"rng/learner-{i:05d}/torch"] = st
                out.update({f"learners/{i:05d}/{k}": v for k, v in own.items()})
            for part in a_rng:
                for a, st in part.items():
                    out.update({f"rng/actor-{a:05d}/{k}": v for k, v in st.items()})
            return out

        log.save_checkpoint(checksum(np.concatenate([p.detach().cpu().numpy().ravel() for p in learner.params])),
                            arrays, self.version, group=self.g.gi, extra_attrs=self.g.attrs(self.version))

    def shutdown(self, preempted):
        # actors.overlap: an actor may have collected one more unroll: taken (not trained on; its episodes count as
        # discarded), then its BYE
        drained = []
        bye = [link.stop(self.wrec, self.version, preempted, drain=bool(self.cfg.actors.overlap),
                         counted=lambda rec: drained.append(int(rec["meta"][M["n_episodes"]]))) for link in self.links]
        return sum(b["discarded"] for b in bye) + sum(drained)

    def summary(self, discarded):
        return f"{discarded} episode(s) in flight discarded" + self.g.summary()

    def close(self):
        self.coll.close()


def learner_main(ctx) -> None:
    if ctx.layout.league:  # gradients stay inside the learner group; run bookkeeping spans every learner
        from hpcmarl.roles.league import LearnerLeague

        groups = LearnerLeague(ctx)
    else:
        groups = Solo(ctx)
    run_learner(ctx, RolloutFlow(ctx, groups))
