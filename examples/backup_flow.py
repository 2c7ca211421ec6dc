"""A data flow of your own (docs/extending/flow.md): synchronous rollouts with backup actors. Each update trains on
the first ``n - algo.backups`` unrolls made with the current weights to arrive at a learner (of its ``n`` actors); a
slow actor's unroll that comes later is dropped when it arrives, and that actor collects its next one with the newest
weights (synchronous SGD with backup workers, Chen et al. 2016, arXiv 1604.00981). The updates no longer wait for the
slowest actor; the price is the dropped samples (``late_unrolls`` in /metrics).

    mpirun -n 4 hpcmarl train configs/simple_spread_mappo.yaml plugins=[examples.backup_flow] algo.name=mappo_backup \\
        algo.backups=1

Listing this module in the config's ``plugins`` imports it on every rank before the config is read: it registers the
flow (its role module is this file) and ``mappo_backup``, MAPPO on that flow with one more option. Nothing under
``hpcmarl/`` changes. What a run on it cannot do is stated by the registry: no ``actors.overlap``, no league, no
sizing model (``hpcmarl validate --predict`` says it is not modelled); a resume is not exact (which actors are late
depends on timing).
"""
import dataclasses
import time

from hpcmarl.algos import base as algos
from hpcmarl.algos.ppo import PPOConfig
from hpcmarl.comm import protocol
from hpcmarl.comm.spec import META_INDEX as M
from hpcmarl.flows import register_flow
from hpcmarl.roles.actor_work import RolloutActor, run_actor
from hpcmarl.roles.loop import run_learner
from hpcmarl.roles.rollouts import RolloutFlow, Solo
from hpcmarl.typedconfig import check


@dataclasses.dataclass
class BackupConfig(PPOConfig):
    name: str = "mappo_backup"  # MAPPO on the backup flow
    backups: int = 1  # each update trains on the first (its actors - backups) unrolls of the current version
    # (at least one); 0: every actor's, as on the synchronous flow

    def validate(self, cfg) -> None:
        super().validate(cfg)
        check(self.backups >= 0, "algo.backups", "must be >= 0")


class BackupFlow(RolloutFlow):
    """The synchronous flow, but a round takes only the first unrolls of the current version (the others' receives
    stay posted: a late unroll is dropped when it comes). ``late`` counts them; :meth:`shutdown` always drains (an
    actor may still be collecting when the stop comes)."""

    def __init__(self, ctx):
        super().__init__(ctx, Solo(ctx))
        self.wanted = max(1, len(self.links) - self.cfg.algo.backups)
        self.late = 0
        self.timeout = self.cfg.runtime.timeout_s

    def gather(self) -> list:
        recs, waiting = [], list(self.links)
        backoff = protocol.Backoff()
        while len(recs) < self.wanted:
            got = False
            for link in list(waiting):
                rec = link.test()
                if rec is None:
                    continue
                got = True
                if int(rec["meta"][M["version"]]) != self.version:  # made with older weights: dropped
                    self.late += 1
                    link.post()
                    continue
                recs.append(rec)
                waiting.remove(link)
            if got:
                backoff.reset()
                continue
            now = time.monotonic()
            for link in waiting:  # a silent actor is not hidden by the others' unrolls: each one is bounded
                if now - link.since > self.timeout:
                    raise protocol.CommTimeout(f"timed out after {self.timeout:.0f}s waiting for an unroll from "
                                               f"actor rank {link.rank}")
            backoff.wait()
        return recs

    def round(self):
        r = super().round()
        r.row["late_unrolls"] = self.ctrl.sum_named({"late": self.late})["late"]  # so far, over every learner
        return r

    def shutdown(self, preempted):
        bye = [link.stop(self.wrec, self.version, preempted) for link in self.links]
        return sum(b["discarded"] for b in bye)

    def summary(self, discarded):
        return f"{discarded} episode(s) in flight discarded; {self.late} late unroll(s) dropped on this learner"


def learner_main(ctx) -> None:
    run_learner(ctx, BackupFlow(ctx))


def actor_main(ctx) -> None:
    run_actor(ctx, RolloutActor(ctx))  # the synchronous flow's actor: it always takes the newest weights


register_flow("rollouts_backup", __name__, doc="synchronous rollouts; each update trains on the first n - "
              "algo.backups unrolls of the current version", replace=True)
algos.register(dataclasses.replace(algos.get("mappo"), name="mappo_backup", config=BackupConfig,
                                   flow="rollouts_backup", league=False, overlap=False), replace=True)
