"""League mode on MPI: the league rank's server loop and the actors' and learner leads' side of it.

Messages (pickled dicts on the wire only; nothing received is stored as a pickle):

- actor -> league ``LEAGUE {"kind": "report", "group", "results": [(member, score), ...]}`` after every unroll,
  answered with ``LEAGUE_REPLY {"assignment": {policy group: [(member, p), ...]}, "paths": {member: file}}``;
  ``{"kind": "bye"}`` when the actor stops (no answer).
- learner lead of each group -> league ``LEAGUE {"kind": "status", "group", "update", "version", "want_state",
  "stop"}`` after every update, answered with ``{"snapshot": bool, "rows": {...}, "state": {...}}``; with
  ``snapshot`` the lead then sends its flat policy (``POOL``, float32) and the league writes the pool file.

The league rank plays the fixed-seed evaluation games one at a time between messages, so it never keeps an
actor waiting for longer than one game.
"""
from __future__ import annotations

import json
import time
from typing import Dict, List, Optional

import numpy as np

from hpcmarl import compiled
from hpcmarl.algos.base import make_inference
from hpcmarl.comm import protocol
from hpcmarl.comm.protocol import Tag
from hpcmarl.comm.spec import EPISODE_RETURNS
from hpcmarl.envs import EnvSpec, make_env
from hpcmarl.envs import entry as env_entry
from hpcmarl.league.aec import play_episode
from hpcmarl.league.matchmaking import OUTCOME_INDEX
from hpcmarl.league.pool import BASELINE_NAMES, RANDOM, PolicyBank, aec_player, baseline_player
from hpcmarl.league.seats import SELF, SeatGames, league_spec
from hpcmarl.league.server import League

EVAL_SEED = 1_000_000  # evaluation game i of every matchup resets the env with EVAL_SEED + i


def snapshot_attrs(cfg, gi: int, spec: EnvSpec, version: int) -> dict:
    """What :func:`hpcmarl.league.pool.policy_from` needs to rebuild a group's policy."""
    g, grp = cfg.league.groups[gi], spec.groups[0]
    return {"group": g.name, "policy_group": g.policy_group, "version": int(version), "env": cfg.env.name,
            "obs_dim": grp.obs_dim, "n_actions": grp.n_actions, "hidden": cfg.algo.hidden, "layers": cfg.algo.layers,
            "encoder": getattr(cfg.algo, "encoder", "mlp"), "obs_shape": list(grp.obs_shape), "seats": cfg.league.seats,
            "greedy": int(g.snapshot_greedy),
            # the game as it was played (hpcmarl match): JSON text, HDF5 attributes hold no dicts
            "env_kwargs": json.dumps(cfg.env.kwargs or {}), "policy_map": json.dumps(cfg.policy_map)}


# --------------------------------------------------------------------------------------------------
# actor side
# --------------------------------------------------------------------------------------------------
class ActorLeague:
    """An actor's view of the league: the current assignment (sampled per episode) and the member bank."""

    def __init__(self, ctx, actor_index: int, own_policy, seed: int):
        self.ctx, self.idx = ctx, actor_index
        self.gi = ctx.layout.group_of(ctx.rank)
        cfg = ctx.cfg
        self.group = cfg.league.groups[self.gi]
        self.rng = np.random.default_rng(seed)
        self.bank = PolicyBank(own_policy, self.rng, capacity=cfg.league.opponent_cache)
        own = self.group.policy_group
        others = list(dict.fromkeys(g.policy_group for g in cfg.league.groups))
        self.assign = {pg: [(SELF if pg == own else RANDOM, 1.0)] for pg in others}
        self.results: List[tuple] = []

    def choose(self, env_index: int) -> Dict[str, int]:
        out = {}
        for pg, opts in self.assign.items():
            p = np.array([q for _, q in opts], np.float64)
            out[pg] = int(opts[int(self.rng.choice(len(opts), p=p / p.sum()))][0])
        return out

    def collect_results(self, episodes) -> None:
        """``(member of the other seats, score, return)``; cooperative: score 0.5, the team return."""
        own, coop = self.group.policy_group, self.ctx.cfg.league.outcome == "cooperative"
        for ep in episodes:
            opp = ep.members.get(own) if self.ctx.cfg.league.seats != "per_group" else next(
                (m for pg, m in ep.members.items() if pg != own), SELF)
            self.results.append((int(opp), 0.5 if coop else float(ep.score),
                                 float(ep.team_return if coop else ep.mean_return)))

    def exchange(self) -> None:
        """Report the finished episodes, take the new assignment."""
        cfg = self.ctx.cfg
        league = self.ctx.layout.league_rank
        protocol.send_object(self.ctx.world, league, {"kind": "report", "group": self.gi, "results": self.results},
                             Tag.LEAGUE, cfg.runtime.timeout_s)
        self.results = []
        reply = protocol.recv_object(self.ctx.world, league, Tag.LEAGUE_REPLY, cfg.runtime.timeout_s,
                                        "the league rank's assignment")
        self.bank.paths.update(reply["paths"])
        self.assign = {pg: [(int(m), float(p)) for m, p in opts] for pg, opts in reply["assignment"].items()}

    def bye(self) -> None:
        protocol.send_object(self.ctx.world, self.ctx.layout.league_rank, {"kind": "bye", "group": self.gi},
                             Tag.LEAGUE, self.ctx.cfg.runtime.timeout_s)


# --------------------------------------------------------------------------------------------------
# learner side (the lead learner of each group talks to the league)
# --------------------------------------------------------------------------------------------------
class LearnerLeague:
    """The synchronous flow's learner groups in league mode (the hooks of :class:`hpcmarl.roles.rollouts.Solo`):
    gradients stay inside a learner group, run bookkeeping spans every learner, and the lead learner of each
    group reports to the league rank after every update."""

    def __init__(self, ctx):
        from hpcmarl.comm.collective import Collective
        from hpcmarl.league.server import TABLES

        self.ctx = ctx
        self.gi = ctx.layout.group_of(ctx.rank)
        self.coll = Collective(ctx.group_comm, ctx.cfg.learner.backend)
        self.ctrl = Collective(ctx.learner_comm, "mpi")
        self.groups = [g.name for g in ctx.cfg.league.groups]
        self.tables = TABLES
        self.prefix = f"group/{self.groups[self.gi]}/"  # this group's learner state in checkpoints
        self.active = self.coll.rank == 0
        self.state: Dict[str, np.ndarray] = {}
        self.snapshots = 0  # sent to the pool by this lead in this session
        self.restarts = bool(ctx.cfg.league.groups[self.gi].restart)
        self.sent = False  # this round's status sent a snapshot
        self.specs = [league_spec(ctx.cfg, i) for i in range(len(ctx.cfg.league.groups))]

    def returns(self, episode) -> list:
        """An episode has the return of its own group only (its unroll's env has that one group)."""
        own = episode[EPISODE_RETURNS][0]
        return [own if j == self.gi else np.nan for j in range(len(self.groups))]

    def stats(self, row: dict) -> dict:
        """Each group's statistics (keys named after the group) gathered to the lead learner."""
        parts = self.ctrl.gather(row if self.coll.rank == 0 else {})
        return {k: v for part in (parts or []) for k, v in part.items()}

    def states(self, learner):
        """Every group's lead contributes its state (parameters and optimizer under group/<name>/, the policy
        alone under policy/<name> for `hpcmarl match`), the league its state."""
        parts = self.ctrl.gather((self.gi, learner.state_arrays(), learner.policy_flat()) if self.active else None)

        def arrays():
            out = {}
            for part in parts:
                if part is not None:
                    g, st, flat = part
                    out.update({f"group/{self.groups[g]}/{k}": v for k, v in st.items()})
                    out[f"policy/{self.groups[g]}"] = flat
            out.update(self.state)
            return out

        return arrays

    def attrs(self, version: int) -> Optional[dict]:
        return self.policy_meta(version) if self.ctx.rank == 0 else None

    def rows(self, update: int, version: int, policy_flat, stop_reason: str, checkpoint_due: bool) -> Dict[str, list]:
        """The status round trip; the league's state comes back when a checkpoint follows."""
        want = self.ctx.rank == 0 and (bool(stop_reason) or checkpoint_due)
        got = self.status(update, version, policy_flat, want, bool(stop_reason))
        return {name: got.get(name, []) for name in self.tables}

    def restart(self) -> bool:
        """``league.groups.N.restart``: True on every learner of the group after its lead sent a snapshot."""
        if not self.restarts:
            return False
        sent, self.sent = self.sent, False
        return bool(self.coll.sum_small(np.array([float(sent and self.active)]))[0] > 0)

    def summary(self) -> str:
        snaps = self.ctrl.sum_small(np.array([self.snapshots]))[0]
        return f"; {int(snaps)} snapshot(s) added to the pool this session"

    def policy_meta(self, version: int) -> dict:
        """Checkpoint attribute ``policy_meta``: how to rebuild each group's ``policy/<name>`` (JSON text)."""
        return {"policy_meta": {g.name: snapshot_attrs(self.ctx.cfg, i, self.specs[i], version)
                                for i, g in enumerate(self.ctx.cfg.league.groups)}}

    def status(self, update: int, version: int, policy_flat, want_state: bool, stop: bool) -> Dict[str, list]:
        """One round trip after an update; returns rows for ``run.h5 /league`` (lead learner only). The other
        groups' leads go first (a barrier over the learners), so the lead learner's rows include their
        snapshots of this update."""
        ctx = self.ctx
        rows = {}
        if self.active and ctx.rank != 0:
            self._exchange(update, version, policy_flat, want_state, stop)
        if len(ctx.cfg.league.groups) > 1:
            protocol.barrier(ctx.learner_comm, ctx.cfg.runtime.timeout_s, "the other learner groups' league status")
        if ctx.rank == 0:
            rows = self._exchange(update, version, policy_flat, want_state, stop)
        return rows

    def _exchange(self, update: int, version: int, policy_flat, want_state: bool, stop: bool) -> Dict[str, list]:
        ctx, cfg = self.ctx, self.ctx.cfg
        league = ctx.layout.league_rank
        protocol.send_object(ctx.world, league, {"kind": "status", "group": self.gi, "update": update,
                                                 "version": version, "want_state": want_state, "stop": stop},
                             Tag.LEAGUE, cfg.runtime.timeout_s)
        what = "the league rank's answer to a status message"
        reply = protocol.recv_object(ctx.world, league, Tag.LEAGUE_REPLY, cfg.runtime.timeout_s, what)
        if reply["snapshot"]:
            flat = np.ascontiguousarray(policy_flat(), np.float32)
            protocol.send_snapshot(ctx.world, league, flat, cfg.runtime.timeout_s)
            self.snapshots += 1
            self.sent = True
        reply = protocol.recv_object(ctx.world, league, Tag.LEAGUE_REPLY, cfg.runtime.timeout_s, what)
        if reply.get("state") is not None:
            self.state = reply["state"]
        return reply.get("rows", {})


# --------------------------------------------------------------------------------------------------
# league rank
# --------------------------------------------------------------------------------------------------
def make_player(member: int, bank: PolicyBank, seed: int):
    """An AEC player ``obs -> action`` for a pool member (most likely legal moves unless the bank samples) or a
    scripted baseline."""
    return baseline_player(member, seed) if member in BASELINE_NAMES else aec_player(bank.policy(member), bank.greedy)


class Matchup:
    """One evaluation matchup of ``league.eval_games`` games, played one at a time by :meth:`step`."""

    def __init__(self, cfg, a: int, b: int):
        self.a, self.b, self.n = a, b, cfg.league.eval_games
        # pool against pool: two deterministic policies would replay one game per seat; open with random moves
        self.opening = 0 if a in BASELINE_NAMES or b in BASELINE_NAMES else cfg.league.eval_opening
        self.i = 0
        self.wdl = [0, 0, 0]
        self.return_sum = 0.0

    def play(self):
        """One game: ``(score of a, return of a)``."""
        raise NotImplementedError  # pragma: no cover

    def close(self):
        self.env.close()

    def step(self) -> bool:
        """Play one game; True when the matchup is over."""
        score, ret = self.play()
        self.wdl[OUTCOME_INDEX[score]] += 1
        self.return_sum += ret
        self.i += 1
        if self.i >= self.n:
            self.close()
            return True
        return False


class EvalGame(Matchup):
    """Turn-based games: seats alternate, game i resets with EVAL_SEED + i."""

    def __init__(self, cfg, a: int, b: int, bank: PolicyBank):
        super().__init__(cfg, a, b)
        self.env = make_env(cfg.env.name, cfg.env.kwargs)
        self.pa, self.pb = make_player(a, bank, 17), make_player(b, bank, 29)

    def play(self):
        first, second = self.env.possible_agents[:2]
        sa, sb = (first, second) if self.i % 2 == 0 else (second, first)
        ret = play_episode(self.env, {sa: self.pa, sb: self.pb}, EVAL_SEED + self.i, self.opening)[sa]
        return (1.0 if ret > 0 else 0.0 if ret < 0 else 0.5), ret


class EvalEpisodes(Matchup):
    """Simultaneous-move games: member ``a`` plays its group's seats, ``b`` every other seat (:class:`SeatGames`,
    one env copy seeded with EVAL_SEED, episode i's opening seeded EVAL_SEED + i), so the episode sequence is the
    same in every run. Cooperative leagues count every episode as a draw and sum team returns."""

    def __init__(self, cfg, a: int, b: int, bank: PolicyBank):
        super().__init__(cfg, a, b)
        policy = bank.policy(a)
        name = policy.spec.groups[0].name
        pg = cfg.league.groups[[g.name for g in cfg.league.groups].index(name)].policy_group
        self.games = SeatGames(cfg.env.name, cfg.env.kwargs, cfg.policy_map, pg, cfg.league.seats, policy, b, bank,
                               EVAL_SEED, self.opening, cfg.actors.env_errors, cfg.actors.max_env_errors)
        self.coop = cfg.league.outcome == "cooperative"

    def close(self):
        self.games.close()

    def play(self):
        ep = self.games.play(EVAL_SEED + self.i)
        return (0.5, ep.team_return) if self.coop else (ep.score, ep.mean_return)


def league_main(ctx) -> None:
    ctx.faults.at("startup")
    cfg, world, layout = ctx.cfg, ctx.world, ctx.layout
    league = League(cfg, ctx.run_dir, seed=cfg.seed + 99991)
    if ctx.resume_path:
        from hpcmarl import storage

        arrays, _ = storage.load_checkpoint(ctx.resume_path, bounded=False)
        if "league/members" in arrays:
            league.load_state_arrays(arrays)
    bank = PolicyBank(None, np.random.default_rng(cfg.seed), greedy=cfg.league.eval_greedy,
                      capacity=cfg.league.opponent_cache)
    bank.paths.update({m: d["path"] for m, d in league.members.items()})  # a resumed pool
    specs = [league_spec(cfg, gi) for gi in range(len(layout.groups))]
    n_params = [sum(p.numel() for p in make_inference(sp, cfg.algo).params) for sp in specs]
    turn_based = env_entry(cfg.env.name, cfg.env.kwargs).turn_based
    meter = None
    if cfg.league.exploitability_every or cfg.league.meta_game == "exact":
        from hpcmarl.league.exploitability import NashConv, openspiel_game

        meter = NashConv(openspiel_game(cfg.env.name, cfg.env.kwargs))
    ctx.agree_startup()
    n_leads, n_actors = len(layout.groups), layout.actors
    stopped, byes = set(), 0
    # until the first status: the learners' first update may compile (hpcmarl.compiled), under the start-up bound
    silence = compiled.first_update_bound(cfg, layout.actors)
    game = None  # the evaluation matchup in progress
    last_msg = time.monotonic()
    while len(stopped) < n_leads or byes < n_actors:
        got = protocol.poll_league(world)
        if got is not None:
            src, msg = got
            last_msg = time.monotonic()
            gi = int(msg["group"])
            if msg["kind"] == "report":
                league.report(gi, msg["results"])
                a = league.assignment(gi)
                protocol.send_object(world, src, {"assignment": a, "paths": league.paths(a)}, Tag.LEAGUE_REPLY,
                                     cfg.runtime.timeout_s)
            elif msg["kind"] == "bye":
                byes += 1
            elif msg["kind"] == "status":
                silence = cfg.runtime.timeout_s
                update = int(msg["update"])
                ctx.faults.at(update)
                due = league.snapshot_due(gi, update)
                protocol.send_object(world, src, {"snapshot": due}, Tag.LEAGUE_REPLY, cfg.runtime.timeout_s)
                if due:
                    flat = np.zeros(n_params[gi], np.float32)
                    protocol.recv_snapshot(world, src, flat, cfg.runtime.timeout_s)
                    mid = league.add_member(gi, int(msg["version"]), update, flat,
                                            snapshot_attrs(cfg, gi, specs[gi], int(msg["version"])))
                    bank.paths[mid] = league.members[mid]["path"]
                if msg["stop"]:
                    stopped.add(gi)
                protocol.send_object(world, src, {"rows": league.take_rows(update, msg["stop"]) if src == 0 else {},
                                                  "state": league.state_arrays() if msg["want_state"] else None},
                                     Tag.LEAGUE_REPLY, cfg.runtime.timeout_s)
            continue
        if meter is not None and league.measure_queue:  # between messages, like the evaluation games
            league.measure(*league.measure_queue[0], meter, bank.policy)
            league.measure_queue.pop(0)
            continue
        if game is None and league.eval_queue:  # the matchup leaves the queue (kept in checkpoints) once played
            game = (EvalGame if turn_based else EvalEpisodes)(cfg, *league.eval_queue[0], bank)
        if game is not None:
            if game.step():
                league.eval_queue.pop(0)
                league.record_eval(game.a, game.b, *game.wdl, return_sum=game.return_sum)
                game = None
            continue
        if time.monotonic() - last_msg > silence:
            raise protocol.CommTimeout(f"league rank: no message from any learner or actor for {silence:.0f}s")
        time.sleep(0.001)
    ctx.faults.at("final")
