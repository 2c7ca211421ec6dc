"""Stop a run whose loss or parameters stop being finite, before a checkpoint keeps them.

Every round, right after the update (before the stop vote, the hand-out of new weights and any checkpoint), every
learner checks its round's metrics (loss values and the gradient norm: keys named ``*loss*`` or ``grad_norm``) and
its parameters (one ``isfinite`` over them). The learners agree (one small all-reduce when there are several); on a
non-finite value the lead learner prints one line::

    hpcmarl: error: non-finite value at update 12: parameter model/policies.agent.0.weight has 3 non-finite values
    (of 1152); no checkpoint of it was written (the newest is .../ckpt-000000010.h5): resume from there with other
    settings (e.g. a lower algo.lr), or start over with --fresh

then the learners stop their actors, close run.h5 and exit with status 1 (league mode: the job is aborted after the
line, as its league rank waits for the groups' last reports). Actors never receive non-finite weights (sampling
from them would fail there).

Test knob: ``HPCMARL_INJECT_FAULT=<rank>:nan:<update>`` sets one parameter of that learner to NaN right after that
update (see :mod:`hpcmarl.faults` for the other kinds).
"""
from __future__ import annotations

import math
import os
import re
import sys
from typing import Dict, List, Optional

import numpy as np
import torch

WATCHED = re.compile(r"(^|/)([^/]*loss[^/]*|grad_norm)$")  # metrics row keys that must stay finite


def row_problem(row: Dict[str, float]) -> str:
    """``agent/policy_loss = nan, grad_norm = inf`` for the watched keys of a metrics row that are not finite."""
    bad = []
    for k in sorted(row):
        v = row[k]
        if WATCHED.search(k) and isinstance(v, (int, float, np.number)) and not math.isfinite(float(v)):
            bad.append(f"{k} = {float(v)}")
    return ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")


def _params(flow) -> Optional[List]:
    """The parameters the flow trains: a learner's tensors, or those of a flow whose shell owns the update (its
    ``trained_params()``: the gradient flow's flat vector); None: unknown flow."""
    learner = getattr(flow, "learner", None)
    if learner is not None and getattr(learner, "params", None) is not None:
        return list(learner.params)
    own = getattr(flow, "trained_params", None)
    if own is not None:
        return own()
    return None


def params_finite(params: List) -> bool:
    """One ``isfinite`` over every parameter (on their device)."""
    if not params:
        return True
    if isinstance(params[0], np.ndarray):
        return bool(np.isfinite(np.concatenate([p.ravel() for p in params])).all())
    with torch.no_grad():
        return bool(torch.isfinite(torch.cat([p.detach().reshape(-1) for p in params])).all())


def _named_arrays(flow) -> Dict[str, np.ndarray]:
    """The parameters under their checkpoint names (``model/...``), to say which one is not finite."""
    learner = getattr(flow, "learner", None)
    if learner is not None:
        arrays = learner.state_arrays()
        return {k: v for k, v in arrays.items() if k.startswith(("model/", "target/"))} or arrays
    named = getattr(flow, "named_params", None)  # a flow whose shell owns the update names its own parameters
    if named is not None:
        return named()
    return {"parameters": np.concatenate([np.asarray(p).ravel() for p in _params(flow) or []])}


def params_problem(flow) -> str:
    """``parameter model/x has 3 non-finite values (of 1024)`` ('' when every parameter is finite)."""
    params = _params(flow)
    if params is None or params_finite(params):
        return ""
    bad = []
    for k, v in sorted(_named_arrays(flow).items()):
        v = np.asarray(v)
        if v.dtype.kind in "fc":
            n = int(v.size - np.isfinite(v).sum())
            if n:
                bad.append(f"parameter {k} has {n} non-finite value{'s' if n > 1 else ''} (of {v.size})")
    if not bad:
        return "a parameter is not finite"
    return bad[0] + (f", and {len(bad) - 1} more parameter(s) too" if len(bad) > 1 else "")


def poison(flow) -> None:
    """``HPCMARL_INJECT_FAULT=<rank>:nan:<update>``: one parameter of this learner becomes NaN (the learner loop calls
    it after that update)."""
    params = _params(flow)
    if params:
        with torch.no_grad():
            if isinstance(params[0], np.ndarray):
                params[0].reshape(-1)[0] = np.nan
            else:
                params[0].view(-1)[0] = float("nan")


def check_finite(ctx, flow, log, row: Dict[str, float]) -> None:
    """The learner loop's check after each round (every learner calls it; see the module docstring).

    Raises:
        SystemExit: status 1 after the one line and a clean stop, when any learner found a non-finite value.
    """
    update = int(log.counters["update"])
    bad = "; ".join(p for p in (row_problem(row), params_problem(flow)) if p)
    ctrl = flow.ctrl
    if ctrl.size > 1:
        if ctrl.max_small(np.array([float(bool(bad))]))[0] == 0:
            return
        found = ctrl.gather((ctx.rank, bad))
    elif not bad:
        return
    else:
        found = [(ctx.rank, bad)]
    if log.lead:
        several = ctrl.size > 1
        what = "; ".join(f"{'learner rank ' + str(r) + ': ' if several else ''}{b}" for r, b in found if b)
        sys.stderr.write(f"hpcmarl: error: non-finite value at update {update}: {what}; {_advice(ctx)}\n")
        sys.stderr.flush()
    if ctx.layout.league:  # the league rank would wait for every group's last report until its timeout
        ctrl.bcast(None)  # the line is out before any rank aborts
        from hpcmarl.comm import launcher

        launcher.abort(ctx.world, f"non-finite value at update {update}")
    flow.shutdown(False)
    if log.writer is not None:
        log.writer.close()
    log.loggers.close(failed=True)
    flow.close()
    from hpcmarl.comm.protocol import barrier

    # the actors end normally and meet every rank in run_training's closing barrier: so do the learners
    barrier(ctx.world, ctx.cfg.runtime.timeout_s, "every rank to finish (a rank still busy or hung)")
    raise SystemExit(1)


def _advice(ctx) -> str:
    from hpcmarl import storage

    ckpts = storage.list_checkpoints(os.path.join(ctx.run_dir, "checkpoints"))
    if not ckpts:
        return "no checkpoint was written; change the settings (e.g. a lower algo.lr) and run again"
    return (f"no checkpoint of it was written (the newest is {ckpts[-1]}): resume from there with other settings "
            f"(e.g. a lower algo.lr), or start over with --fresh")
