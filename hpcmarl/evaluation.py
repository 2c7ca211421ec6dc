"""The evaluation protocol of a training run (``eval.*``; docs/operations/evaluation.md).

Every time the run passes a multiple of ``eval.every_env_steps`` env steps a checkpoint is due (every learner sees
the same reduced counters, so all of them agree). The lead learner, holding that checkpoint's arrays and before it
writes them, plays the policy (:func:`hpcmarl.analysis.evaluate.play`: ``eval.episodes`` episodes on the fixed seed
``eval.seed``, ``eval.num_envs`` env copies (default: one per episode), sampled or with ``eval.greedy`` the most
likely actions) and appends one row to run.h5 ``/eval`` and one row per episode to ``/eval_episodes``. The
checkpoint then counts those rows, so a resume keeps exactly the evaluations up to its checkpoint. The final
checkpoint of a run that ended (a preemption is not an end) is evaluated too: its per-episode returns are those of
``hpcmarl evaluate CKPT --episodes N --seed S --num-envs K [--greedy]`` (K = ``eval.num_envs``, or N when that is 0).

The policy of each new best evaluation (the mean over policy groups of the mean return) is written to
``RUN/eval/ckpt-NNNNNNNNN.h5`` (only the newest is kept; checkpoint pruning never touches it). At the end, with
``eval.absolute``, that policy is re-evaluated with ``10 x eval.episodes`` episodes: marl-eval's "absolute metric",
the ``/eval`` row with ``absolute`` = 1.

Evaluation episodes are never trained on, and the global torch generator is forked around each evaluation: a run
with evaluation draws the same random numbers for training as the same run without it.
"""
from __future__ import annotations

import os
from typing import Dict, List, Optional

import numpy as np
import torch

from hpcmarl import storage
from hpcmarl.analysis.evaluate import play, policy_arrays, policy_from_arrays

ABSOLUTE_EPISODES = 10  # the absolute metric plays this many times eval.episodes


def eval_tables(groups: List[str]) -> Dict[str, Dict[str, tuple]]:
    """The run.h5 tables of the protocol: ``/eval`` (one row per evaluation) and ``/eval_episodes`` (one row per
    evaluation episode; ``eval`` is the row of ``/eval`` it belongs to)."""
    from hpcmarl.storage import schema

    return {"eval": schema.columns(schema.EVAL, groups), "eval_episodes": schema.columns(schema.EVAL_EPISODES, groups)}


class Evaluator:
    """The schedule (every learner) and the evaluations (the lead learner) of ``cfg.eval``."""

    def __init__(self, cfg, spec, run_dir: str, config_yaml: str, env_steps: int):
        self.cfg, self.ev, self.spec, self.config_yaml = cfg, cfg.eval, spec, config_yaml
        self.dir = os.path.join(run_dir, "eval")
        self.groups = [g.name for g in spec.groups]
        self.best = -np.inf
        self.passed(env_steps)

    def due(self, env_steps: int) -> bool:
        return env_steps >= self.next

    def passed(self, env_steps: int) -> None:
        """After every checkpoint (every learner): the next evaluation is at the next multiple."""
        every = self.ev.every_env_steps
        self.next = (env_steps // every + 1) * every

    def resume(self, writer: storage.RunWriter, update: int) -> None:
        """Lead, after run.h5 was reopened and cut back to the checkpoint: the best evaluation so far from /eval; best
        policies written after the checkpoint are removed (the resumed run evaluates again)."""
        t = writer.tables["eval"]
        n = t.rows
        if n:
            cols = {k: t.cols[k][:n] for k in t.cols}
            periodic = cols["absolute"] == 0
            scores = np.mean([cols[f"return_mean/{g}"] for g in self.groups], axis=0)[periodic]
            if len(scores):
                self.best = float(np.max(scores))
        for path in storage.list_checkpoints(self.dir):
            if storage.checkpoint_update(path) > update:
                os.remove(path)

    def evaluate(self, writer: storage.RunWriter, loggers, arrays: Dict[str, np.ndarray], counters: dict,
                 final: bool) -> None:
        """Lead: play the policy of ``arrays`` (the checkpoint about to be written), append the rows, keep a new best;
        with ``final`` and ``eval.absolute`` also the absolute metric. The global torch generator is left as it was
        (building the policy networks draws from it too)."""
        with torch.random.fork_rng(devices=[]):
            self._evaluate(writer, loggers, arrays, counters, final)

    def _evaluate(self, writer, loggers, arrays, counters, final) -> None:
        update = counters["update"]
        policy = policy_from_arrays(self.cfg, self.spec, arrays, update, "the learner's weights")
        r = self._play(policy, self.ev.episodes)
        self._append(writer, loggers, r, counters, update, absolute=False)
        score = float(np.mean([r["groups"][g]["return_mean"] for g in self.groups]))
        if score > self.best:
            self.best = score
            attrs = {"config": self.config_yaml, "update": update, "env_steps": counters["env_steps"],
                     "algo": self.cfg.algo.name, "env": self.cfg.env.name, "groups": self.groups,
                     "eval_score": score}
            storage.save_checkpoint(self.dir, update, policy_arrays(arrays), attrs, keep=1,
                                    reserve_mb=self.cfg.output.min_free_mb)
        if final and self.ev.absolute:
            best = storage.list_checkpoints(self.dir)
            if best:
                best_arrays, best_attrs = storage.load_checkpoint(best[-1])
                best_update = int(best_attrs["update"])
                policy = policy_from_arrays(self.cfg, self.spec, best_arrays, best_update, best[-1])
                r = self._play(policy, ABSOLUTE_EPISODES * self.ev.episodes)
                self._append(writer, loggers, r, counters, best_update, absolute=True)

    def _play(self, policy, episodes: int) -> dict:
        ev = self.ev
        return play(self.cfg, policy, episodes, ev.seed, ev.greedy, ev.num_envs or ev.episodes)

    def _append(self, writer, loggers, r: dict, counters: dict, policy_update: int, absolute: bool) -> None:
        index = writer.tables["eval"].rows
        row = {"update": counters["update"], "env_steps": counters["env_steps"], "wall_time": counters["wall_time"],
               "policy_update": policy_update, "episodes": r["episodes"], "absolute": float(absolute),
               "length_mean": r["length_mean"], "win_rate": r["win_rate"]}
        for g in self.groups:
            row[f"return_mean/{g}"] = r["groups"][g]["return_mean"]
            row[f"return_std/{g}"] = r["groups"][g]["return_std"]
        writer.append("eval", {k: np.array([v], np.float64) for k, v in row.items()})
        n = len(r["episode_lengths"])
        eps = {"eval": np.full(n, index), "episode": np.arange(n), "length": np.array(r["episode_lengths"]),
               "won": np.array(r["episode_won"], np.float64)}
        eps.update({f"return/{g}": np.array(r["groups"][g]["returns"]) for g in self.groups})
        writer.append("eval_episodes", eps)
        name = "eval/absolute" if absolute else "eval"
        loggers.log({f"{name}/{k}": v for k, v in row.items() if "/" in k or k in ("length_mean", "win_rate")},
                    counters["env_steps"])
        what = (f"absolute metric (the best policy, update {policy_update})" if absolute
                else f"evaluation at {counters['env_steps']:,} env steps (update {counters['update']})")
        rets = ", ".join(f"{g} {row[f'return_mean/{g}']:.2f} +- {row[f'return_std/{g}']:.2f}" for g in self.groups)
        if np.isfinite(row["win_rate"]):
            rets += f", win rate {row['win_rate']:.2f}"
        print(f"[hpcmarl] {what}: {rets} over {r['episodes']} episodes ({'greedy' if self.ev.greedy else 'sampled'} "
              f"actions, seed {self.ev.seed})", flush=True)


def make_evaluator(cfg, spec, run_dir: str, config_yaml: str, env_steps: int) -> Optional[Evaluator]:
    """The run's evaluator, or ``None`` when ``eval.every_env_steps`` is 0."""
    if not cfg.eval.every_env_steps:
        return None
    return Evaluator(cfg, spec, run_dir, config_yaml, env_steps)
