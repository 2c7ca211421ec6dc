"""Reading what the live loggers (hpcmarl.tracking) wrote back, each with its own library's reader (tests only)."""
import glob
import json
import os
import struct

import numpy as np


def tb_scalars(log_dir):
    """``{tag: [(step, value), ...]}`` as TensorBoard shows them (EventAccumulator: purged steps are gone)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(log_dir, size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _wandb_records(path):
    """The records of a W&B transaction log (``run-<id>.wandb``): a LevelDB-style log of 32 KiB blocks, a 7-byte
    file header (``:W&B``, magic, version) and 7-byte record headers (crc, length, type: 1 full, 2 first, 3 middle,
    4 last), each record a ``wandb_internal_pb2.Record`` (wandb 0.31 ships no Python reader of its own)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = open(path, "rb").read()
    assert data[:4] == b":W&B", path
    pos, buf = 7, b""
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        if left < 7:
            pos += left
            continue
        _, n, typ = struct.unpack("<IHB", data[pos:pos + 7])
        if typ == 0 and n == 0:
            break
        chunk, pos = data[pos + 7:pos + 7 + n], pos + 7 + n
        buf = chunk if typ in (1, 2) else buf + chunk
        if typ in (1, 4):
            r = pb.Record()
            r.ParseFromString(buf)
            yield r


def wandb_runs(run_dir):
    """Every offline W&B run under ``RUN/wandb``, oldest first: ``{"id", "name", "project", "dir", "rows"}`` with
    ``rows`` the logged history rows (``_step``/``_runtime``/``_timestamp`` left out), values decoded."""
    out = []
    for d in sorted(glob.glob(os.path.join(run_dir, "wandb", "offline-run-*"))):
        (path,) = glob.glob(os.path.join(d, "run-*.wandb"))
        info, rows = {}, []
        for r in _wandb_records(path):
            kind = r.WhichOneof("record_type")
            if kind == "run":
                info = {"id": r.run.run_id, "name": r.run.display_name, "project": r.run.project}
            elif kind == "history":
                rows.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item
                             if not (i.key or "/".join(i.nested_key)).startswith("_")})
        out.append(dict(info, dir=d, rows=rows))
    return out


def mlflow_runs(run_dir, experiment="hpcmarl"):
    """``[(mlflow Run, client)]`` of the experiment in the run's default SQLite store."""
    from mlflow.tracking import MlflowClient

    c = MlflowClient(tracking_uri="sqlite:///" + os.path.join(os.path.abspath(run_dir), "mlflow", "mlflow.db"))
    exp = c.get_experiment_by_name(experiment)
    return c, c.search_runs([exp.experiment_id])


def finite_by_step(metrics, name):
    """``{env_steps: value}`` of run.h5 column ``name`` (non-finite values left out, as the loggers do)."""
    col, steps = metrics[name], metrics["env_steps"]
    return {int(s): float(v) for s, v in zip(steps, col) if np.isfinite(v)}
