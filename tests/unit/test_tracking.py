"""hpcmarl.tracking in-process: a missing package's one line, TensorBoard's purge on resume, the same W&B / MLflow run
for every session of a run directory, a logger failing mid-run, MLflow's param limits (the real libraries; training
runs with every logger: tests/e2e/test_live_loggers.py)."""
import json
import os
import sys

import numpy as np
import pytest

from hpcmarl import tracking
from hpcmarl.config import load_config
from hpcmarl.typedconfig import ConfigError, to_yaml

from launch import require_extra
from tracking_read import mlflow_runs, tb_scalars, wandb_runs


def config(*loggers, **output):
    cfg = load_config(os.path.join(os.path.dirname(__file__), "..", "..", "configs", "test_tiny.yaml"),
                      [f"output.loggers=[{','.join(loggers)}]"] + [f"output.{k}={v}" for k, v in output.items()])
    return cfg


def session(cfg, run, rows, resume=None):
    """Open the loggers of ``cfg`` for ``run`` (``resume``: the checkpoint's env steps), log ``rows``, close."""
    lg = tracking.Loggers.open(cfg, str(run), to_yaml(cfg), resume)
    for row in rows:
        lg.log(row, row["env_steps"])
    lg.close()
    return lg


def rows(steps, offset=0.0):
    return [{"update": s // 10, "env_steps": s, "loss": s / 100 + offset, "return/agent": float("nan")} for s in steps]


def test_a_missing_package_is_one_line_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb raises ImportError
    with pytest.raises(ConfigError) as e:
        tracking.require(["tensorboard", "wandb"])
    assert str(e.value).startswith("output.loggers: wandb needs the Python package 'wandb' (")
    assert str(e.value).endswith('): pip install -e ".[tracking]"') and "\n" not in str(e.value)
    monkeypatch.setitem(sys.modules, "alembic", None)  # the default SQLite store needs it, a server URI not
    with pytest.raises(ConfigError, match="mlflow needs the Python package 'alembic'"):
        tracking.require(["mlflow"])
    with pytest.raises(ConfigError, match="wandb needs"):  # Loggers.open says the same (the lead, before training)
        tracking.Loggers.open(config("wandb"), "unused", "", None)


def test_tensorboard_resume_purges_the_steps_past_the_checkpoint(tmp_path):
    require_extra("tensorboard", "tracking")
    cfg = config("tensorboard")
    session(cfg, tmp_path, rows(range(10, 70, 10)))  # a session that crashed at 60 after its checkpoint at 30
    session(cfg, tmp_path, rows([40, 50], offset=1.0), resume=30)
    tb = tb_scalars(str(tmp_path / "tensorboard"))
    assert sorted(tb) == ["env_steps", "loss", "update"]  # NaN is not sent
    assert tb["loss"] == [(s, pytest.approx(v)) for s, v in ((10, .1), (20, .2), (30, .3), (40, 1.4), (50, 1.5))]


def test_every_session_of_a_run_continues_the_same_wandb_and_mlflow_runs(tmp_path):
    require_extra("wandb", "tracking")
    require_extra("mlflow", "tracking")
    cfg = config("wandb", "mlflow")
    session(cfg, tmp_path, rows([10, 20, 30]))
    rid = json.load(open(tmp_path / "tracking.json"))["id"]
    session(config("wandb", "mlflow", checkpoint_every=7), tmp_path, rows([30, 40], offset=1.0), resume=20)
    w = wandb_runs(str(tmp_path))
    assert [r["id"] for r in w] == [rid, rid] and w[0]["name"] == tmp_path.name
    assert [[r["env_steps"] for r in x["rows"]] for x in w] == [[10, 20, 30], [30, 40]]
    assert "return/agent" not in w[0]["rows"][0]
    client, runs = mlflow_runs(str(tmp_path))
    assert len(runs) == 1 and runs[0].data.tags["hpcmarl.run_id"] == rid and runs[0].info.status == "FINISHED"
    assert runs[0].data.params["output.checkpoint_every"] == "5"  # params cannot change: the first session's kept
    hist = [(h.step, h.value) for h in client.get_metric_history(runs[0].info.run_id, "loss")]
    assert sorted(hist) == [(10, .1), (20, .2), (30, .3), (30, 1.3), (40, 1.4)]  # rows past the checkpoint stay
    session(cfg, tmp_path, rows([10]))  # a fresh start in place (no checkpoint to resume from): new runs
    assert json.load(open(tmp_path / "tracking.json"))["id"] != rid
    assert len(mlflow_runs(str(tmp_path))[1]) == 2 and len({r["id"] for r in wandb_runs(str(tmp_path))}) == 2


def test_a_logger_failing_mid_run_warns_once_and_is_switched_off(tmp_path, monkeypatch, capsys):
    require_extra("tensorboard", "tracking")
    require_extra("wandb", "tracking")
    from torch.utils.tensorboard import SummaryWriter

    add = SummaryWriter.add_scalar

    def full(self, tag, value, global_step=None, **kw):
        if global_step >= 20:
            raise OSError(28, "No space left on device\nsecond line")
        return add(self, tag, value, global_step, **kw)

    monkeypatch.setattr(SummaryWriter, "add_scalar", full)
    lg = session(config("tensorboard", "wandb"), tmp_path, rows([10, 20, 30, 40]))
    out = capsys.readouterr().err
    err = [line for line in out.splitlines() if line.startswith("hpcmarl")]
    assert err == ["hpcmarl: warning: logger tensorboard failed (OSError: [Errno 28] No space left on device); it is "
                   "off for the rest of this session"], out
    assert lg.active == []  # closed
    w = wandb_runs(str(tmp_path))
    assert [r["env_steps"] for r in w[0]["rows"]] == [10, 20, 30, 40], w  # the other went on
    assert [s for s, _ in tb_scalars(str(tmp_path / "tensorboard"))["loss"]] == [10]


def test_mlflow_params_respect_its_limits():
    logged = []
    m = object.__new__(tracking._MLflow)
    m.c, m.run_id = type("C", (), {"log_batch": lambda self, run_id, params: logged.extend(params)})(), "r"
    flat = {f"k{i:03d}": i for i in range(150)}
    flat.update({"long": "x" * 7000, "k" * 251: 1, "lst": [1, 2], "have": 3})
    m._params(flat, have={"have"})
    got = {p.key: p.value for p in logged}
    assert len(got) == 152 and got["long"] == "x" * 6000 and got["lst"] == "[1, 2]" and got["k007"] == "7"
    assert "k" * 251 not in got and "have" not in got


def test_no_loggers_or_another_rank_log_nothing():
    lg = tracking.Loggers.open(config(), "unused", "", None)
    lg.log({"a": np.float32(1.0)}, 1)
    lg.close()
    assert lg.active == []
