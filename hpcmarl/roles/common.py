"""What every role shell shares: the run log (counters, stop vote, metrics, checkpoints, progress line) and fault
injection for tests. An actor's env copies and sampler are built in :mod:`hpcmarl.actors` (no MPI)."""
from __future__ import annotations

import collections
import os
import sys
import time
from typing import Callable, Dict, List, Optional

import numpy as np

from hpcmarl import storage, tracking
from hpcmarl.actors import ActorPlan
from hpcmarl.comm.spec import EPISODE_INDEX, EPISODE_RETURNS, EPISODE_WON, META_INDEX
from hpcmarl.evaluation import eval_tables, make_evaluator

M = META_INDEX
# an episode row as the learners gather it for run.h5's /episodes (columns of the same names): these, then the return
# of each env group, then won (nan where the env does not say); :meth:`RunLog.log` reads them back by name
EPISODE_ROW = ["actor", "env", "length", "policy_version"]


def episode_row(actor: int, env: int, length: int, version: int, returns, won: float = float("nan")) -> tuple:
    return (actor, env, length, version, *returns, won)


def unroll_episodes(rec, returns=lambda e: e[EPISODE_RETURNS]) -> list:
    """The episode rows of an unroll record's finished episodes; ``returns(e)``: the returns of the record's row ``e``
    that the row keeps (a league group keeps its own)."""
    m, e = rec["meta"], EPISODE_INDEX
    return [episode_row(int(m[M["actor"]]), int(ep[e["env"]]), int(ep[e["length"]]), int(m[M["version"]]),
                        returns(ep), ep[EPISODE_WON]) for ep in rec["episodes"][:int(m[M["n_episodes"]])]]


SIGNAL_REASON = "stop signal received"
WALL_REASON = "max_wall_s reached"
ACTOR_TIMERS = ("t_env", "t_infer", "t_wait", "t_send")  # unroll meta slots, logged as time/actor_*


def actor_plan(ctx, index: int) -> ActorPlan:
    """Actor ``index`` of this run as plain values (serial mode: the learner's own actor 0)."""
    layout = ctx.layout
    return ActorPlan(ctx.cfg, index, max(1, layout.actors), ctx.start_update, ctx.run_dir,
                     layout.group_of(ctx.rank) if layout.league and not layout.serial else 0)


def duration(seconds: float) -> str:
    """``45s``, ``12m``, ``3h05m``."""
    seconds = int(round(seconds))
    if seconds < 100:
        return f"{seconds}s"
    if seconds < 6000:
        return f"{round(seconds / 60)}m"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Progress:
    """The lead learner's console line: every ``interval`` s, ``\\r``-refreshed on a terminal."""

    def __init__(self, interval: float, total_steps: int, groups: List[str], wall_left: Callable[[], float] = None):
        self.interval, self.total, self.groups = interval, total_steps, groups
        self.wall_left = wall_left  # seconds until train.max_wall_s ends this session (None: no limit)
        self.tty = sys.stdout.isatty()
        self.last = 0.0

    def line(self, s: dict) -> str:
        rets = " ".join(f"{g} {s['return_window/' + g]:.1f}" if not np.isnan(s["return_window/" + g]) else f"{g} n/a"
                        for g in self.groups)
        pct = 100.0 * s["env_steps"] / self.total if self.total else 0.0
        return (f"[hpcmarl] upd {int(s['update']):>6} | steps {int(s['env_steps']):>11,} ({pct:5.1f}%) | "
                f"{s['sps']:>8,.0f} sps | return {rets} | lag {s['lag_mean']:.2f} | {s['wall_time']:7.0f}s"
                f"{self.eta(s)}")

    def eta(self, s: dict) -> str:
        """`` | eta 12m`` at this session's rate to ``total_env_steps`` (`` | wall limit in 5m`` when
        ``train.max_wall_s`` ends the session first); empty before the rate is known."""
        left = self.total - s["env_steps"]
        if left <= 0 or not s["sps"] > 0:
            return ""
        eta, what = left / s["sps"], "eta"
        if self.wall_left is not None and self.wall_left() < eta:
            eta, what = max(0.0, self.wall_left()), "wall limit in"
        return f" | {what} {duration(eta)}"

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

    Episode rows are ``(actor, env, length, policy_version, return per group..., won)`` (``won`` left out by flows
    whose actors report no battle outcome: NaN). ``loggers``: the live loggers
    (:mod:`hpcmarl.tracking`, lead only, else empty) every metrics row also goes to; other rows can be sent with
    ``log.loggers.log(row, env_steps)``."""

    def __init__(self, ctx, coll, groups: List[str], resume_attrs: Optional[dict] = None,
                 tables: Optional[dict] = None):
        cfg = ctx.cfg
        self.ctx, self.cfg, self.coll, self.groups = ctx, cfg, coll, groups
        self.lead = ctx.rank == 0
        self.counters = {"update": 0, "env_steps": 0, "episodes": 0, "wall_time": 0.0, "discarded_episodes": 0,
                         "env_errors": 0}
        self.resume_rows = None
        self.tables = dict(tables or {})
        if resume_attrs is not None:
            for k in self.counters:
                # (older runs: no env_errors)
                self.counters[k] = type(self.counters[k])(resume_attrs.get(k, self.counters[k]))
            self.resume_rows = {k[len("rows_"):]: int(v) for k, v in resume_attrs.items() if k.startswith("rows_")}
        self.window = {g: collections.deque(maxlen=cfg.output.episode_window) for g in groups}
        self.won = collections.deque(maxlen=cfg.output.episode_window)  # episode outcomes where the env has them
        self.progress = Progress(cfg.output.progress_s, cfg.train.total_env_steps, groups,
                                 (lambda: cfg.train.max_wall_s - (time.monotonic() - self.session0))
                                 if cfg.train.max_wall_s else None)
        self.writer: Optional[storage.RunWriter] = None
        self.loggers = tracking.Loggers()  # live loggers (lead, output.loggers): log.loggers.log(row, env_steps)
        self.reached = False
        self.reached_at = None  # (window returns, env steps, wall seconds) when the target was first reached
        self.row: Optional[dict] = None
        self.reasons: List[str] = []
        self.wall0 = time.monotonic() - self.counters["wall_time"]
        self.session0 = time.monotonic()
        self.session_steps0 = self.counters["env_steps"]
        self.last_ckpt = self.counters["update"]
        self.evaluator = make_evaluator(ctx.cfg, ctx.env_spec, ctx.run_dir, ctx.config_yaml,
                                        self.counters["env_steps"])  # eval.*: None when off
        if self.evaluator:
            self.tables.update(eval_tables(groups))
        self.final_eval = False  # set by the loop before the final checkpoint of a run that ended (not preempted)

    def open(self, banner: str = "") -> None:
        """Lead: create (or reopen on resume) run.h5 and refill the return window from it."""
        if not self.lead:
            return
        ctx = self.ctx
        self.writer = w = storage.RunWriter(os.path.join(ctx.run_dir, "run.h5"), ctx.run_attrs(), self.groups,
                                            resume_rows=self.resume_rows, flush_s=self.cfg.output.flush_s,
                                            tables=self.tables, reserve_mb=self.cfg.output.min_free_mb)
        w.f.attrs["resumed_from"] = ctx.resume_path or ""
        if self.evaluator and ctx.resume_path:
            self.evaluator.resume(w, self.counters["update"])
        self.loggers = tracking.Loggers.open(self.cfg, ctx.run_dir, ctx.config_yaml,
                                             self.counters["env_steps"] if ctx.resume_path else None)
        # episodes the previous session's final stop cut off came after its final checkpoint (loop.run_learner)
        c = self.counters
        c["discarded_episodes"] = max(c["discarded_episodes"], int(w.f.attrs.get("discarded_episodes", 0)))
        resumed = (f" (resumed from {os.path.basename(ctx.resume_path)}, update {self.counters['update']})"
                   if ctx.resume_path else "")
        print(f"[hpcmarl] run directory: {os.path.abspath(ctx.run_dir)}{banner}{resumed}", flush=True)
        if w.short:  # rows a crash lost before they reached the disk (a run.h5 not flushed before its checkpoint)
            print(f"hpcmarl: warning: {w.path} holds fewer rows than {os.path.basename(ctx.resume_path)} counts ("
                  + ", ".join(f"/{k}: {have} of {n}" for k, (have, n) in sorted(w.short.items()))
                  + "); the missing rows are lost, the run goes on from there", file=sys.stderr, flush=True)
        if w.episodes.rows:
            k = min(w.episodes.rows, self.cfg.output.episode_window)
            for g in self.groups:
                vals = w.episodes.cols[f"return/{g}"][w.episodes.rows - k:]
                self.window[g].extend(vals[np.isfinite(vals)])
            won = w.episodes.cols["won"][w.episodes.rows - k:]
            self.won.extend(won[np.isfinite(won)])

    def advance(self, env_steps: int, episodes: int, env_errors: int = 0) -> None:
        c = self.counters
        c["update"] += 1
        c["env_steps"] += env_steps
        c["episodes"] += episodes
        c["env_errors"] += env_errors  # env copies re-created after an exception (actors.env_errors=reset)
        c["wall_time"] = time.monotonic() - self.wall0

    def base_row(self) -> dict:
        c = self.counters
        return {"update": c["update"], "env_steps": c["env_steps"], "wall_time": c["wall_time"],
                "episodes": c["episodes"], "env_errors": c["env_errors"],
                "sps": (c["env_steps"] - self.session_steps0) / max(1e-9, time.monotonic() - self.session0)}

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
            reasons.append(WALL_REASON)
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
            cols = dict(zip([*EPISODE_ROW, *(f"return/{g}" for g in groups), "won"], arr.T))
            cols.update({k: np.full(len(arr), c[k]) for k in ("update", "env_steps", "wall_time")})
            for g in groups:
                vals = cols[f"return/{g}"]
                ok = np.isfinite(vals)  # league mode: an episode has the return of its own group only
                self.window[g].extend(vals[ok])
                if ok.any():
                    row[f"return/{g}"] = float(vals[ok].mean())
            won = cols["won"][np.isfinite(cols["won"])]
            self.won.extend(won)
            if len(won):
                row["win_rate"] = float(won.mean())
            self.writer.add_episodes(cols)
            row["episode_length"] = float(cols["length"].mean())
        for g in groups:
            row[f"return_window/{g}"] = float(np.mean(self.window[g])) if self.window[g] else float("nan")
            row.setdefault(f"return/{g}", float("nan"))
        row.setdefault("episode_length", float("nan"))
        row.setdefault("win_rate", float("nan"))  # battles (SMAX): won episodes of this update, and over the window
        row["win_rate_window"] = float(np.mean(self.won)) if self.won else float("nan")
        self.writer.log_metrics(row)
        self.loggers.log(row, int(row["env_steps"]))
        self.progress.maybe(row)
        target = self.cfg.train.target_return
        if target is not None:
            reached = all(len(self.window[g]) >= self.cfg.output.episode_window  # a full window, not a lucky few
                          and np.mean(self.window[g]) >= target for g in groups)
            if reached and not self.reached:  # what the stop vote saw (the final update adds episodes after it)
                c = self.counters
                self.reached_at = (", ".join(f"{g} {np.mean(self.window[g]):.2f}" for g in groups), c["env_steps"],
                                   c["wall_time"])
            self.reached = reached

    def checkpoint_due(self, stop_reason: str) -> bool:
        """Every ``output.checkpoint_every`` updates, and when an evaluation is due (it evaluates the checkpoint)."""
        c = self.counters
        return not stop_reason and (c["update"] - self.last_ckpt >= self.cfg.output.checkpoint_every
                                    or bool(self.evaluator and self.evaluator.due(c["env_steps"])))

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
            arrays = make_arrays()
            ev = self.evaluator
            if ev and (ev.due(c["env_steps"]) or self.final_eval):  # before the rows are counted: a resume keeps it
                ev.evaluate(self.writer, self.loggers, arrays, c, final=self.final_eval)
            self.writer.flush()  # the rows it counts are on disk before the checkpoint is: a kill -9 loses none of them
            attrs.update({f"rows_{name}": n for name, n in self.writer.rows().items()})
            attrs.update(learner_param_checksums=[float(x) for x in sums], config=self.ctx.config_yaml,
                         algo=self.cfg.algo.name, env=self.cfg.env.name, groups=self.groups, version=version)
            storage.save_checkpoint(os.path.join(self.ctx.run_dir, "checkpoints"), c["update"], arrays, attrs,
                                    self.cfg.output.keep_checkpoints, self.cfg.output.min_free_mb)
        self.last_ckpt = c["update"]
        if self.evaluator:
            self.evaluator.passed(c["env_steps"])

    def preempted(self) -> bool:
        """A signal (or, with ``train.wall_exit_requeue``, ``train.max_wall_s``) stopped an unfinished run (no
        learner saw the run's end): exit status 75 so job scripts requeue (see slurm/)."""
        pause = {SIGNAL_REASON} | ({WALL_REASON} if self.cfg.train.wall_exit_requeue else set())
        seen = self.coll.max_small(np.array([float(bool(pause & set(self.reasons))),
                                             float(any(r not in pause for r in self.reasons))]))
        return bool(seen[0] > 0 and seen[1] == 0)

    def final_checkpoint_due(self) -> bool:
        # a resumed, finished run writes nothing
        return self.counters["update"] != self.last_ckpt or not self.ctx.resume_path

    def finish(self, stop_reason: str, summary: str) -> None:
        if not self.lead:
            return
        self.writer.f.attrs["discarded_episodes"] = self.counters["discarded_episodes"]  # with the final stop's
        self.writer.close()
        self.loggers.close()
        if self.row is not None:
            self.progress.maybe(self.row, force=True)
        c = self.counters
        rets = ", ".join(f"{g} {np.mean(self.window[g]) if self.window[g] else float('nan'):.2f}" for g in self.groups)
        if "target_return reached" in stop_reason:
            at, steps, wall = self.reached_at
            print(f"[hpcmarl] reached the target return {self.cfg.train.target_return} ({at} over the last "
                  f"{self.cfg.output.episode_window} episodes) at {steps:,} env steps in {wall:.0f}s", flush=True)
        elif self.cfg.train.target_return is not None:
            print(f"[hpcmarl] the target return {self.cfg.train.target_return} was not reached ({stop_reason})",
                  flush=True)
        print(f"[hpcmarl] finished ({stop_reason}): {c['update']} updates, {c['env_steps']:,} env steps, "
              f"{c['episodes']:,} episodes in {c['wall_time']:.1f}s; {summary}; mean return over the last "
              f"{self.cfg.output.episode_window} episodes: {rets}; outputs in {os.path.abspath(self.ctx.run_dir)}",
              flush=True)
