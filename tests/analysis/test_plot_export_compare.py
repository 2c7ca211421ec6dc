"""plot / export / compare against the HDF5 contents of real (short, serial) runs."""
import csv
import glob
import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest

from hpcmarl.analysis.compare import compare_runs, format_compare
from hpcmarl.analysis.export import export_run
from hpcmarl.analysis.plot import plot_runs
from hpcmarl.storage import StorageError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _train(run_dir, *overrides):
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "hpcmarl.cli", "train", "configs/test_tiny.yaml", f"run_dir={run_dir}",
           "train.max_updates=30", "env.kwargs.max_cycles=5", "learner.threads=1", *overrides]
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, start_new_session=True)
    assert p.returncode == 0, f"{' '.join(cmd)} -> {p.returncode}\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}"
    return str(run_dir)


@pytest.fixture(scope="session")
def runs(tmp_path_factory):
    """r1, r2: MAPPO simple_spread seeds 1 and 2 (same config otherwise); tag: IPPO simple_tag (2 groups)."""
    root = tmp_path_factory.mktemp("analysis_runs")
    return {"r1": _train(root / "r1", "seed=1"), "r2": _train(root / "r2", "seed=2"),
            "tag": _train(root / "tag", "seed=1", "env.name=simple_tag_v3", "algo.name=ippo")}


def _h5_table(path, group):
    out = {}
    with h5py.File(path, "r") as f:
        f[group].visititems(lambda n, o: out.__setitem__(n, o[()]) if isinstance(o, h5py.Dataset) else None)
    return out


def _hashes(dirs):
    out = {}
    for d in dirs:
        for p in sorted(glob.glob(os.path.join(d, "**", "*"), recursive=True)):
            if os.path.isfile(p):
                with open(p, "rb") as fh:
                    out[p] = (hashlib.sha256(fh.read()).hexdigest(), os.stat(p).st_mtime_ns)
    return out


def _svg_text(path):
    with open(path) as fh:
        s = fh.read()
    assert s.lstrip().startswith("<?xml") and "<svg" in s
    return s


# --------------------------------------------------------------------------------------------------
# plot
# --------------------------------------------------------------------------------------------------
def _assert_png(path):
    assert os.path.getsize(path) > 1000
    with open(path, "rb") as fh:
        assert fh.read(8) == PNG_MAGIC


def test_plot_learning_curves_png_and_svg(runs, tmp_path):
    out = plot_runs([runs["r1"], runs["r2"], runs["tag"]], str(tmp_path / "curves.png"))
    assert out == str(tmp_path / "curves.png")
    _assert_png(out)
    # r1 + r2 differ only in the seed -> one mean line with a band; r1 + tag -> one line per run
    s = _svg_text(plot_runs([runs["r1"], runs["r2"]], str(tmp_path / "seeds.svg"), x="wall_time", smooth=5))
    assert "mean of 2 seeds" in s and "return/agent" in s and "wall time" in s
    s = _svg_text(plot_runs([runs["r1"], runs["tag"]], str(tmp_path / "two.svg")))
    assert "mean of" not in s
    assert ">r1<" in s and ">tag<" in s and "return/adversary" in s and "return/agent" in s


@pytest.mark.parametrize("metric", ["agent/entropy", "agent/value_loss", "sps", "lag_mean", "time/update", "lag"])
def test_plot_metrics(runs, tmp_path, metric):
    _assert_png(plot_runs([runs["r1"], runs["r2"]], str(tmp_path / "m.png"), metric=metric))


def test_plot_metric_without_group_prefix_draws_every_group(runs, tmp_path):
    s = _svg_text(plot_runs([runs["tag"]], str(tmp_path / "e.svg"), metric="entropy"))
    assert "adversary/entropy" in s and "agent/entropy" in s


def test_plot_league(runs, tmp_path):
    league_run = str(tmp_path / "league_run")
    shutil.copytree(runs["r1"], league_run)
    with h5py.File(os.path.join(league_run, "run.h5"), "a") as f:  # a copy; the real run is never written
        g = f.create_group("league")
        g["update"] = np.arange(1, 11, dtype=np.float64)
        g["rating/p0"] = np.linspace(1000, 1100, 10)
        g["rating/p1"] = np.linspace(1000, 900, 10)
    s = _svg_text(plot_runs([league_run], str(tmp_path / "league.svg"), metric="league"))
    assert "rating/p0" in s and "rating/p1" in s
    with pytest.raises(StorageError, match="no league data") as e:
        plot_runs([runs["r1"]], str(tmp_path / "x.png"), metric="league")
    assert runs["r1"] in str(e.value)


def test_plot_bad_arguments(runs, tmp_path):
    with pytest.raises(StorageError) as e:
        plot_runs([runs["r1"]], str(tmp_path / "x.png"), metric="no_such_metric")
    msg = str(e.value)
    assert "no_such_metric" in msg and runs["r1"] in msg and "agent/value_loss" in msg and "sps" in msg
    with pytest.raises(ValueError, match=r"\.pdf"):
        plot_runs([runs["r1"]], str(tmp_path / "x.pdf"))
    with pytest.raises(ValueError, match="x must be"):
        plot_runs([runs["r1"]], str(tmp_path / "x.png"), x="updates")
    assert not os.path.exists(tmp_path / "x.png") and not os.path.exists(tmp_path / "x.pdf")


# --------------------------------------------------------------------------------------------------
# export
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def exported(runs, tmp_path_factory):
    out = tmp_path_factory.mktemp("export_tag")
    return runs["tag"], str(out), export_run(runs["tag"], str(out), chunk_episodes=25)


def _same(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return a.shape == b.shape and bool(np.all((a == b) | (np.isnan(a) & np.isnan(b))))


@pytest.mark.parametrize("table", ["metrics", "episodes"])
def test_export_csv_matches_hdf5(exported, table):
    run, out, res = exported
    h5 = _h5_table(os.path.join(run, "run.h5"), table)
    with open(os.path.join(out, f"{table}.csv"), newline="") as fh:
        rows = list(csv.reader(fh))
    header, body = rows[0], rows[1:]
    assert header == sorted(h5)
    lengths = {len(v) for v in h5.values()}
    assert lengths == {len(body)} and res["rows"][table] == len(body) and len(body) > 0
    for j, name in enumerate(header):
        col = [r[j] for r in body]
        if h5[name].dtype.kind == "f":
            assert _same([float(c) for c in col], h5[name]), name  # repr round-trips exactly
        else:
            assert [int(c) for c in col] == h5[name].tolist(), name


def test_export_npz_matches_trajectories(exported):
    run, out, res = exported
    traj = os.path.join(run, "trajectories", "actor-00000.h5")
    steps, eps = _h5_table(traj, "steps"), _h5_table(traj, "episodes")
    files = sorted(glob.glob(os.path.join(out, "trajectories", "*.npz")))
    assert [os.path.basename(p) for p in files] == [
        "actor-00000_ep000000-000024.npz", "actor-00000_ep000025-000049.npz", "actor-00000_ep000050-000074.npz"]
    assert sorted(res["trajectories"]["files"]) == files
    seen = []
    for p in files:
        lo, hi = map(int, re.search(r"_ep(\d+)-(\d+)\.npz$", p).groups())
        with np.load(p, allow_pickle=False) as z:
            d = {k: z[k] for k in z.files}
        assert set(d) == ({"steps__" + k.replace("/", "__") for k in steps}
                          | {"episodes__" + k.replace("/", "__") for k in eps})
        assert all(v.dtype != object for v in d.values())
        ids = d["episodes__episode"]
        assert ids.min() >= lo and ids.max() <= hi
        rows = np.isin(eps["episode"], ids)
        for k, v in eps.items():
            assert np.array_equal(d["episodes__" + k.replace("/", "__")], v[rows]), k
        idx = np.concatenate([np.arange(s, s + n) for s, n in zip(eps["start"][rows], eps["length"][rows])])
        for k, v in steps.items():
            assert np.array_equal(d["steps__" + k.replace("/", "__")], v[idx]), k
        seen += ids.tolist()
    assert sorted(seen) == eps["episode"].tolist()
    assert res["trajectories"]["episodes"] == len(eps["episode"]) and res["trajectories"]["steps"] == len(steps["t"])


def test_export_marl_eval_json(exported):
    run, out, res = exported
    with open(os.path.join(out, "marl_eval.json")) as fh:
        data = json.load(fh)
    assert list(data) == ["mpe"] and list(data["mpe"]) == ["simple_tag_v3"]
    assert list(data["mpe"]["simple_tag_v3"]) == ["ippo"] and list(data["mpe"]["simple_tag_v3"]["ippo"]) == ["seed_1"]
    r = data["mpe"]["simple_tag_v3"]["ippo"]["seed_1"]
    steps = sorted((k for k in r if k.startswith("step_")), key=lambda k: int(k.split("_")[1]))
    assert set(r) == set(steps) | {"absolute_metrics"} and len(steps) == res["marl_eval"]["steps"] > 1
    eps = _h5_table(os.path.join(run, "run.h5"), "episodes")
    team = eps["return/adversary"] + eps["return/agent"]
    counts = [r[k]["step_count"] for k in steps]
    assert all(isinstance(c, int) for c in counts) and counts == sorted(set(counts))
    assert counts[-1] == int(eps["env_steps"].max())
    assert np.allclose(np.concatenate([r[k]["return"] for k in steps]), team)
    assert np.allclose(np.concatenate([r[k]["agent_return"] for k in steps]), eps["return/agent"])
    for k in steps:  # each evaluation point holds the episodes finished up to its step_count
        assert all(isinstance(v, float) for v in r[k]["return"])
    assert any(r["absolute_metrics"]["return"] == r[k]["return"] for k in steps)


def test_export_reports_optional_formats(exported):
    run, out, res = exported
    has_arrow = importlib.util.find_spec("pyarrow") is not None
    assert ("parquet" in res["skipped"]) == (not has_arrow)
    assert os.path.exists(os.path.join(out, "metrics.parquet")) == has_arrow
    if "tensorboard" in res["skipped"]:
        assert res["tensorboard"] == [] and not os.path.exists(os.path.join(out, "tensorboard"))
    else:
        assert res["tensorboard"] and all(os.path.exists(p) for p in res["tensorboard"])
    assert all(os.path.exists(p) for p in res["files"])


def test_export_tensorboard_scalars(runs, tmp_path, monkeypatch):
    """The TensorBoard branch with a recording stand-in for SummaryWriter (tensorboard may be absent)."""
    import hpcmarl.analysis.export as export

    calls = []

    class Writer:
        def __init__(self, log_dir):
            os.makedirs(log_dir, exist_ok=True)
            self.path = os.path.join(log_dir, "events.out.tfevents.test")

        def add_scalar(self, tag, value, global_step, walltime):
            calls.append((tag, value, global_step))

        def close(self):
            open(self.path, "w").close()

    monkeypatch.setattr(export, "_summary_writer", lambda: (Writer, None))
    res = export_run(runs["r1"], str(tmp_path / "exp"), trajectories=False)
    assert res["tensorboard"] == [str(tmp_path / "exp" / "tensorboard" / "events.out.tfevents.test")]
    m = _h5_table(os.path.join(runs["r1"], "run.h5"), "metrics")
    got = [(v, s) for t, v, s in calls if t == "agent/entropy"]
    assert got == [(float(v), int(s)) for v, s in zip(m["agent/entropy"], m["env_steps"])]
    assert {t for t, _, _ in calls} == {k for k in m if np.isfinite(m[k]).any()}
    assert res["skipped"]["trajectories"] == "not requested"


# --------------------------------------------------------------------------------------------------
# compare
# --------------------------------------------------------------------------------------------------
def test_compare(runs):
    res = compare_runs([runs["r1"], runs["r2"]])
    assert res["config_diff"]["seed"] == [1, 2]
    assert "algo.lr" not in res["config_diff"] and "env.name" not in res["config_diff"]
    for row, d in zip(res["table"], [runs["r1"], runs["r2"]]):
        m = _h5_table(os.path.join(d, "run.h5"), "metrics")
        e = _h5_table(os.path.join(d, "run.h5"), "episodes")
        assert row["env_steps"] == int(m["env_steps"][-1]) and row["updates"] == int(m["update"][-1]) == 30
        assert row["episodes"] == len(e["length"]) and row["sps_last"] == pytest.approx(m["sps"][-1])
        assert row["return_last/agent"] == pytest.approx(e["return/agent"][-500:].mean())
    text = format_compare(res)
    lines = text.splitlines()
    assert any(re.match(r"seed\s+1\s+2$", ln) for ln in lines)
    assert "algo.lr" not in text
    # aligned: every row of the metrics table fills each column span that the dashes mark
    i = lines.index("final metrics:")
    header, dashes, body = lines[i + 1], lines[i + 2], lines[i + 3:i + 5]
    spans = [m.span() for m in re.finditer(r"-+", dashes)]
    assert len(spans) == len(res["columns"]) and len(body) == 2
    for ln in [header] + body:
        assert all(ln[a:b].strip() for a, b in spans), ln

    res = compare_runs([runs["r1"], runs["tag"]])
    assert {"algo.name", "env.name"} <= set(res["config_diff"]) and "seed" not in res["config_diff"]
    assert "return_last/adversary" in res["columns"] and res["table"][0]["return_last/adversary"] is None


# --------------------------------------------------------------------------------------------------
# errors and read-only
# --------------------------------------------------------------------------------------------------
TOOLS = {
    "plot": lambda d, tmp: plot_runs([d], os.path.join(tmp, "p.png")),
    "export": lambda d, tmp: export_run(d, os.path.join(tmp, "exp")),
    "compare": lambda d, tmp: compare_runs([d]),
}


def _broken(kind, src, tmp):
    d = os.path.join(tmp, f"run-{kind}")
    if kind == "missing":
        return d, d
    shutil.copytree(src, d)
    p = os.path.join(d, "run.h5")
    if kind == "not-hdf5":
        with open(p, "wb") as fh:
            fh.write(b"this is not an HDF5 file\n" * 100)
    elif kind == "truncated":
        os.truncate(p, os.path.getsize(p) // 2)
    elif kind == "schema":
        with h5py.File(p, "a") as f:
            f.attrs["schema_version"] = 99
    return d, p


@pytest.mark.timeout(60)
@pytest.mark.parametrize("tool", sorted(TOOLS))
@pytest.mark.parametrize("kind", ["missing", "not-hdf5", "truncated", "schema"])
def test_bad_run_gives_one_line_storage_error(runs, tmp_path, tool, kind):
    d, path = _broken(kind, runs["r1"], str(tmp_path))
    with pytest.raises(StorageError) as e:
        TOOLS[tool](d, str(tmp_path))
    msg = str(e.value)
    assert path in msg and "\n" not in msg
    assert {"missing": "no such", "not-hdf5": "not an HDF5", "truncated": "truncated",
            "schema": "schema version 99"}[kind] in msg
    assert not os.path.exists(os.path.join(tmp_path, "exp", "metrics.csv"))


@pytest.mark.timeout(60)
def test_truncated_trajectory_and_checkpoint(runs, tmp_path):
    d = str(tmp_path / "run")
    shutil.copytree(runs["tag"], d)
    traj = os.path.join(d, "trajectories", "actor-00000.h5")
    os.truncate(traj, os.path.getsize(traj) // 2)
    with pytest.raises(StorageError, match="truncated") as e:
        export_run(d, str(tmp_path / "exp"))
    assert traj in str(e.value)
    ckpt = sorted(glob.glob(os.path.join(d, "checkpoints", "*.h5")))[-1]
    os.truncate(ckpt, os.path.getsize(ckpt) // 2)
    res = compare_runs([d])  # the metrics still come from run.h5; the damaged files are reported
    assert res["table"][0]["updates"] == 30 and any(ckpt in w for w in res["warnings"])
    assert "warning: " in format_compare(res)


def test_tools_never_modify_what_they_read(runs, tmp_path):
    dirs = [runs["r1"], runs["r2"], runs["tag"]]
    before = _hashes(dirs)
    plot_runs(dirs, str(tmp_path / "a.png"))
    plot_runs(dirs, str(tmp_path / "b.svg"), metric="sps", x="wall_time")
    plot_runs(dirs, str(tmp_path / "c.png"), metric="lag")
    export_run(runs["tag"], str(tmp_path / "exp"))
    format_compare(compare_runs(dirs))
    assert _hashes(dirs) == before
