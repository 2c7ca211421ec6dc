"""run.h5's row tables, declared once: each column's name, NumPy dtype and meaning. The writers create the datasets from
these declarations (:func:`columns`) and the file-format reference page (``tools/docs_schema.py``) renders them, so a
column cannot be written without being documented. ``<g>`` in a name stands for each env group of the run (league
tables: each league group)."""
from __future__ import annotations

from typing import Dict, Iterable, List, Tuple

Column = Tuple[str, str, str]  # name, NumPy dtype, meaning

# /episodes: one row per finished episode (hpcmarl.roles.common.EPISODE_ROW fills the first columns)
EPISODES: List[Column] = [
    ("actor", "i4", "actor index (0 in serial mode)"),
    ("env", "i4", "env copy within that actor (NIGT: 0)"),
    ("length", "i4", "steps in the episode"),
    ("policy_version", "i8", "policy version of the unroll the episode ended in (NIGT: the round)"),
    ("update", "i8", "update that consumed that unroll (matches `/metrics/update`)"),
    ("env_steps", "i8", "env steps counted at the end of that update"),
    ("wall_time", "f8", "run wall time at the end of that update, seconds"),
    ("return/<g>", "f8", "episode return of `<g>`, summed over the group's agents"),
    ("won", "f8", "1 for a won battle (SMAX: every enemy unit dead, an ally alive), 0 otherwise; NaN where the env "
                  "reports no outcome (and for NIGT)"),
]

# /unrolls (MA-Trace): one row per unroll trained on
UNROLLS: List[Column] = [
    ("update", "i8", "update that consumed the unroll"),
    ("actor", "i4", "actor index"),
    ("behaviour_version", "i8", "policy version the actor collected it with"),
    ("lag", "i4", "learner version at training time − `behaviour_version`"),
    ("env_steps", "i8", "env steps after that update"),
    ("wall_time", "f8", "run wall time after that update"),
]

# /eval: one row per evaluation of the protocol (hpcmarl.evaluation)
EVAL: List[Column] = [
    ("update", "f8", "update at which the evaluation was made"),
    ("env_steps", "f8", "env steps at that update (the first update past a multiple of `eval.every_env_steps`, or the "
                        "run's end)"),
    ("wall_time", "f8", "run wall time at that update, seconds"),
    ("policy_update", "f8", "update of the policy played (the absolute metric: of the best evaluation's policy, "
                            "`eval/ckpt-*.h5`)"),
    ("episodes", "f8", "episodes played (`eval.episodes`; absolute metric: 10 times that)"),
    ("absolute", "f8", "1 for the absolute metric (the last row of a finished run), else 0"),
    ("length_mean", "f8", "mean episode length"),
    ("win_rate", "f8", "won share of the episodes (NaN where the env reports no outcome)"),
    ("return_mean/<g>", "f8", "mean return of `<g>` over the evaluation's episodes"),
    ("return_std/<g>", "f8", "their standard deviation"),
]

# /eval_episodes: one row per episode of an evaluation
EVAL_EPISODES: List[Column] = [
    ("eval", "i8", "row of `/eval` the episode belongs to"),
    ("episode", "i8", "episode number within that evaluation (the order episodes ended, as `hpcmarl evaluate --json` "
                      "lists them)"),
    ("length", "i8", "steps in the episode"),
    ("won", "f8", "the episode's outcome, as `/episodes/won`"),
    ("return/<g>", "f8", "episode return of `<g>`"),
]


def columns(table: List[Column], groups: Iterable[str] = ()) -> Dict[str, Tuple[tuple, str]]:
    """A table's columns as :class:`hpcmarl.storage.Table` takes them (name -> (shape, dtype)), ``<g>`` expanded for
    each of ``groups``."""
    groups = list(groups)
    out: Dict[str, Tuple[tuple, str]] = {}
    for name, dtype, _ in table:
        for n in ([name.replace("<g>", g) for g in groups] if "<g>" in name else [name]):
            out[n] = ((), dtype)
    return out
