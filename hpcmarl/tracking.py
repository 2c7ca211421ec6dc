"""Live experiment loggers: the lead learner also sends each run.h5 /metrics row to TensorBoard, Weights & Biases
and/or MLflow (``output.loggers``; ``pip install -e ".[tracking]"``). Metric names are run.h5's, the step is the
env-step count; non-finite values are not sent. run.h5 stays the record: a logger is a view of it.

* ``tensorboard``: event files in ``RUN/tensorboard`` (``tensorboard --logdir RUN/tensorboard``); a resumed run
  purges the steps past its checkpoint.
* ``wandb``: a run in ``RUN/wandb`` (``output.wandb_mode``: offline by default; upload later from a login node with
  ``wandb sync RUN/wandb/offline-run-*``), its id kept in ``RUN/tracking.json`` so a resumed session continues the
  same W&B run; ``env_steps`` is its step metric.
* ``mlflow``: a run of experiment ``output.mlflow_experiment`` in ``output.mlflow_uri`` (default: the SQLite file
  ``RUN/mlflow/mlflow.db``), found again on resume by its tag ``hpcmarl.run_id``; metrics go in batches every
  ``output.flush_s`` seconds.

A missing package is a :class:`ConfigError` naming the extra (:func:`require`, called by the pre-flight); a logger
that fails later (disk full, service down) prints one warning line and is switched off: training goes on.
"""
from __future__ import annotations

import importlib
import json
import math
import os
import re
import sys
import time
import uuid
from typing import Dict, List, Optional

from hpcmarl.typedconfig import ConfigError

EXTRA = 'pip install -e ".[tracking]"'
# logger -> (package named in the error, modules it needs)
PACKAGES = {"tensorboard": ("tensorboard", ("tensorboard", "torch.utils.tensorboard")),
            "wandb": ("wandb", ("wandb",)),
            "mlflow": ("mlflow-skinny", ("mlflow", "mlflow.tracking"))}
SQL_PACKAGES = (("sqlalchemy", "sqlalchemy"), ("alembic", "alembic"))  # MLflow's SQL store (the default URI)
ID_FILE = "tracking.json"  # the run's logger id: the same W&B run / MLflow run for every session of a run directory
MAX_PARAM_KEY, MAX_PARAM_VAL, PARAMS_PER_BATCH, METRICS_PER_BATCH = 250, 6000, 100, 1000  # MLflow's limits


def _first_line(e: BaseException) -> str:
    s = str(e).strip()
    return f"{type(e).__name__}: {s.splitlines()[0]}" if s else type(e).__name__


def mlflow_uri(uri: str, run_dir: str) -> str:
    return uri or "sqlite:///" + os.path.join(os.path.abspath(run_dir), "mlflow", "mlflow.db")


def require(loggers: List[str], mlflow_uri_: str = "") -> None:
    """Import what ``loggers`` need; a missing package raises a one-line :class:`ConfigError` naming the extra."""
    for name in loggers:
        pkg, modules = PACKAGES[name]
        needs = [(pkg, m) for m in modules]
        if name == "mlflow" and (not mlflow_uri_ or mlflow_uri_.startswith("sqlite")):
            needs += list(SQL_PACKAGES)
        for pkg, mod in needs:
            try:
                importlib.import_module(mod)
            except ImportError as e:
                raise ConfigError(f"output.loggers: {name} needs the Python package '{pkg}' ({_first_line(e)}): "
                                  f"{EXTRA}") from None


def run_id(run_dir: str, resume: bool) -> str:
    """The run's logger id (``RUN/tracking.json``): kept on resume, new on a fresh start."""
    path = os.path.join(run_dir, ID_FILE)
    if resume:
        try:
            with open(path) as f:
                rid = str(json.load(f)["id"])
            if re.fullmatch(r"[0-9a-f]{16}", rid):  # it goes into an MLflow filter: only an id we wrote is kept
                return rid
        except (OSError, ValueError, KeyError, TypeError):
            pass
    rid = uuid.uuid4().hex[:16]
    with open(path + ".tmp", "w") as f:
        json.dump({"id": rid}, f)
    os.replace(path + ".tmp", path)
    return rid


class _TensorBoard:
    name = "tensorboard"

    def __init__(self, cfg, run_dir, config, rid, resume_env_steps):
        from torch.utils.tensorboard import SummaryWriter

        # purge_step: events a previous session wrote past the checkpoint (steps > its env steps) are hidden; a
        # start over in place hides all
        purge = 0 if resume_env_steps is None else resume_env_steps + 1
        self.w = SummaryWriter(os.path.join(run_dir, "tensorboard"), purge_step=purge,
                               flush_secs=max(1, int(cfg.output.flush_s)))

    def log(self, row, step):
        for k, v in row.items():
            self.w.add_scalar(k, v, global_step=step)

    def close(self, failed):
        self.w.close()


class _WandB:
    name = "wandb"

    def __init__(self, cfg, run_dir, config, rid, resume_env_steps):
        import wandb

        o, run_dir = cfg.output, os.path.abspath(run_dir)
        self.run = wandb.init(mode=o.wandb_mode, dir=run_dir, project=o.wandb_project, config=config,
                              name=os.path.basename(run_dir), id=rid, resume="allow",
                              settings=wandb.Settings(quiet=True, silent=True, console="off", disable_git=True,
                                                      disable_code=True))
        self.run.define_metric("env_steps")
        self.run.define_metric("*", step_metric="env_steps")  # a resume going back in steps loses no rows

    def log(self, row, step):
        self.run.log(row if "env_steps" in row else dict(row, env_steps=step))

    def close(self, failed):
        import wandb

        self.run.finish(exit_code=1 if failed else 0)
        wandb.teardown()  # waits for wandb-core to have written everything (finish alone may return before)


class _MLflow:
    name = "mlflow"

    def __init__(self, cfg, run_dir, config, rid, resume_env_steps):
        import logging

        for lg in ("mlflow", "alembic"):  # the SQLite store's table creation is said at INFO
            logging.getLogger(lg).setLevel(logging.WARNING)
        from mlflow.tracking import MlflowClient

        from hpcmarl.typedconfig import flatten_config

        uri = mlflow_uri(cfg.output.mlflow_uri, run_dir)
        if uri.startswith("sqlite:///"):
            os.makedirs(os.path.dirname(uri[len("sqlite:///"):]), exist_ok=True)
        self.c = c = MlflowClient(tracking_uri=uri)
        exp = c.get_experiment_by_name(cfg.output.mlflow_experiment)
        eid = exp.experiment_id if exp is not None else c.create_experiment(
            cfg.output.mlflow_experiment, artifact_location="file://" + os.path.join(os.path.abspath(run_dir),
                                                                                      "mlflow", "artifacts"))
        found = c.search_runs([eid], filter_string=f"tags.`hpcmarl.run_id` = '{rid}'", max_results=1)
        if found:
            self.run_id = found[0].info.run_id
            c.update_run(self.run_id, status="RUNNING")
            have = set(found[0].data.params)
        else:
            self.run_id = c.create_run(eid, run_name=os.path.basename(os.path.abspath(run_dir)), tags={
                "hpcmarl.run_id": rid, "hpcmarl.run_dir": os.path.abspath(run_dir)[:MAX_PARAM_VAL]}).info.run_id
            have = set()
        self._params(flatten_config(config), have)
        self.buf: list = []
        self.flush_s, self.last = cfg.output.flush_s, time.monotonic()

    def _params(self, flat: dict, have: set) -> None:
        """The flattened config as params: keys past MLflow's length limit are skipped, long values truncated; a
        resumed run keeps the values it has (MLflow's params cannot change)."""
        from mlflow.entities import Param

        params = [Param(k, json.dumps(v) if isinstance(v, (list, dict)) else str(v))
                  for k, v in sorted(flat.items()) if len(k) <= MAX_PARAM_KEY and k not in have]
        params = [Param(p.key, p.value[:MAX_PARAM_VAL]) for p in params]
        for i in range(0, len(params), PARAMS_PER_BATCH):
            self.c.log_batch(self.run_id, params=params[i:i + PARAMS_PER_BATCH])

    def log(self, row, step):
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        self.buf += [Metric(k, v, ts, step) for k, v in row.items()]
        if time.monotonic() - self.last >= self.flush_s:
            self.flush()

    def flush(self):
        self.last = time.monotonic()
        buf, self.buf = self.buf, []
        for i in range(0, len(buf), METRICS_PER_BATCH):
            self.c.log_batch(self.run_id, metrics=buf[i:i + METRICS_PER_BATCH])

    def close(self, failed):
        self.flush()
        self.c.set_terminated(self.run_id, status="FAILED" if failed else "FINISHED")


KINDS = {"tensorboard": _TensorBoard, "wandb": _WandB, "mlflow": _MLflow}


class Loggers:
    """The lead learner's live loggers (an empty one logs nothing: every other rank's, or no ``output.loggers``)."""

    def __init__(self, active: Optional[list] = None):
        self.active = list(active or [])

    @property
    def names(self) -> List[str]:
        return [lg.name for lg in self.active]

    @classmethod
    def open(cls, cfg, run_dir: str, config_yaml: str, resume_env_steps: Optional[int]) -> "Loggers":
        """Open ``cfg.output.loggers`` for ``run_dir``. ``resume_env_steps``: the checkpoint's env steps when the
        session resumes (None: a fresh start). A missing package raises :class:`ConfigError`; a logger that fails
        to open is left out with a warning."""
        names = list(cfg.output.loggers)
        if not names:
            return cls()
        require(names, cfg.output.mlflow_uri)
        import yaml

        config = yaml.safe_load(config_yaml) or {}
        rid = run_id(run_dir, resume_env_steps is not None)
        out = cls()
        for name in names:
            try:
                out.active.append(KINDS[name](cfg, run_dir, config, rid, resume_env_steps))
            except Exception as e:  # noqa: BLE001 - a logger never ends the training
                out._warn(name, "failed to open", e)
        return out

    @staticmethod
    def _warn(name: str, what: str, e: BaseException) -> None:
        print(f"hpcmarl: warning: logger {name} {what} ({_first_line(e)}); it is off for the rest of this session",
              file=sys.stderr, flush=True)

    def _each(self, what: str, call) -> None:
        for lg in list(self.active):
            try:
                call(lg)
            except Exception as e:  # noqa: BLE001 - disk full, service down: warn once, switch it off
                self.active.remove(lg)
                self._warn(lg.name, what, e)

    def log(self, row: Dict[str, float], step: int) -> None:
        """Send ``row`` (name -> number) at ``step`` env steps; non-finite values are left out."""
        if not self.active:
            return
        clean = {}
        for k, v in row.items():
            try:
                f = float(v)
            except (TypeError, ValueError):
                continue
            if math.isfinite(f):
                clean[k] = f
        self._each("failed", lambda lg: lg.log(clean, int(step)))

    def close(self, failed: bool = False) -> None:
        """Flush and close every logger (``failed``: the run ended with an error: W&B exit code 1, MLflow FAILED)."""
        self._each("failed to close", lambda lg: lg.close(failed))
        self.active = []
