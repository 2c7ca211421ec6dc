"""Crafted files make hpcmarl run nothing: a checkpoint, pool snapshot, run.h5 or trajectory file that names code
(``subprocess:getoutput``, a plug-in module, a ``module:EnvId`` gymnasium task) or files outside the run directory is
refused with one line on stderr and exit status 2, and the marker its code would create never appears. What the person
names with ``--env-import``/``--plugins`` works."""
import json
import os
import shutil
import uuid

import h5py
import numpy as np
import pytest
import yaml

from launch import hpcmarl

USER_ENV = "hpcmarl.testing:counting_env"
KUHN = {"group": "main", "policy_group": "player", "env": "kuhn_poker", "obs_dim": 11, "n_actions": 2, "hidden": 16,
        "layers": 1, "version": 0, "env_kwargs": "{}"}


@pytest.fixture(scope="module")
def user_run(tmp_path_factory):
    """A short run of an env given by import path (the person's own config names it): checkpoints and trajectories."""
    d = tmp_path_factory.mktemp("crafted") / "run"
    p = hpcmarl(["train", "configs/test_tiny.yaml", f"env.name={USER_ENV}", f"run_dir={d}", "train.max_updates=5",
                 "output.checkpoint_every=5"])
    assert p.returncode == 0, p.stderr[-2000:]
    return d


def ckpt(run):
    return sorted((run / "checkpoints").glob("ckpt-*.h5"))[-1]


def refused(p, *needles):
    """Exit 2 with exactly one stderr line, naming every needle."""
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1 and lines[0].startswith("hpcmarl: error: "), (p.returncode, p.stderr)
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


@pytest.fixture
def marker_plugin(tmp_path):
    """A module that creates ``tmp_path/MARKER`` when imported; ``(name, marker, env for hpcmarl())``."""
    name = f"crafted_plugin_{uuid.uuid4().hex[:10]}"
    (tmp_path / "mods").mkdir()
    (tmp_path / "mods" / f"{name}.py").write_text(f"open({str(tmp_path / 'MARKER')!r}, 'w').close()\n")
    return name, tmp_path / "MARKER", {"PYTHONPATH": str(tmp_path / "mods")}


def crafted_checkpoint(run, tmp_path, change) -> str:
    path = tmp_path / "checkpoints" / ckpt(run).name
    path.parent.mkdir()
    shutil.copy(ckpt(run), path)
    with h5py.File(path, "r+") as f:
        cfg = yaml.safe_load(f.attrs["config"])
        change(cfg)
        f.attrs["config"] = yaml.safe_dump(cfg)
    return str(path)


def crafted_snapshot(path, attrs) -> str:
    from hpcmarl.envs import EnvSpec, GroupSpec
    from hpcmarl.league.pool import write_snapshot
    from hpcmarl.models import Inference, flat_params

    g = GroupSpec("main", ["player_0"], int(attrs["obs_dim"]), True, n_actions=int(attrs["n_actions"]))
    spec = EnvSpec("x", [g], 0)
    return write_snapshot(str(path), flat_params(Inference(spec, 16, 1).params), attrs)


def league_run(run_dir, attrs, groups=("main",)) -> str:
    """A league run directory: run.h5 naming its groups and one pool snapshot of the first."""
    from hpcmarl.storage import RunWriter

    os.makedirs(run_dir)
    RunWriter(os.path.join(run_dir, "run.h5"), {"league_groups": json.dumps(list(groups)), "env": attrs["env"]},
              ["main"]).close()
    crafted_snapshot(os.path.join(run_dir, "pool", "main-v0000000.h5"), attrs)
    return str(run_dir)


# ---- checkpoints (evaluate) -----------------------------------------------------------------------------------------
def test_evaluate_builds_a_user_env_only_when_named(user_run):
    path = str(ckpt(user_run))
    refused(hpcmarl(["evaluate", path, "--episodes", "2"]),
            f"{path} names env '{USER_ENV}', which is not a registered environment",
            f"code is imported only when you name it: pass --env-import {USER_ENV}")
    p = hpcmarl(["evaluate", path, "--episodes", "2", "--json", "--env-import", USER_ENV])
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    assert r["env"] == USER_ENV and r["groups"]["agent"]["episodes"] == 2


def test_checkpoint_naming_a_shell_command_runs_nothing(user_run, tmp_path):
    marker = tmp_path / "MARKER"
    path = crafted_checkpoint(user_run, tmp_path, lambda c: c["env"].update(name="subprocess:getoutput",
                                                                          kwargs={"cmd": f"touch {marker}"}))
    refused(hpcmarl(["evaluate", path]), "names env 'subprocess:getoutput'", "--env-import subprocess:getoutput")
    refused(hpcmarl(["evaluate", str(tmp_path)]), "names env 'subprocess:getoutput'")  # the run directory's newest
    assert not marker.exists()


def test_checkpoint_listing_a_plugin_imports_it_only_when_named(user_run, tmp_path, marker_plugin):
    name, marker, env = marker_plugin
    path = crafted_checkpoint(user_run, tmp_path, lambda c: c.update(plugins=[name]))
    refused(hpcmarl(["evaluate", path], env=env), f"plug-in module '{name}'", f"pass --plugins {name}")
    assert not marker.exists()
    refused(hpcmarl(["evaluate", path, "--plugins", name], env=env), f"--env-import {USER_ENV}")  # the env: next
    assert marker.exists()  # named: imported
    p = hpcmarl(["evaluate", path, "--episodes", "2", "--plugins", name, "--env-import", USER_ENV], env=env)
    assert p.returncode == 0, p.stderr


def test_checkpoint_gymnasium_task_with_a_module_is_refused(user_run, tmp_path, marker_plugin):
    name, marker, env = marker_plugin
    path = crafted_checkpoint(user_run, tmp_path, lambda c: c["env"].update(
        name="lbf", kwargs={"task": f"{name}:Foraging-8x8-2p-2f-coop-v3"}))
    refused(hpcmarl(["evaluate", path], env=env), f"gymnasium id '{name}:Foraging-8x8-2p-2f-coop-v3'",
            f"--env-import {name}:Foraging-8x8-2p-2f-coop-v3")
    assert not marker.exists()


# ---- pool snapshots and league runs (exploitability, match) ---------------------------------------------------------
def test_pool_snapshot_naming_a_shell_command_runs_nothing(tmp_path):
    marker = tmp_path / "MARKER"
    snap = crafted_snapshot(tmp_path / "pool.h5", {**KUHN, "env": "subprocess:getoutput",
                                                    "env_kwargs": json.dumps({"cmd": f"touch {marker}"})})
    refused(hpcmarl(["exploitability", snap]), f"{snap} names env 'subprocess:getoutput'",
            "pass --env-import subprocess:getoutput")
    run = league_run(tmp_path / "run", {**KUHN, "env": "subprocess:getoutput",
                                        "env_kwargs": json.dumps({"cmd": f"touch {marker}"})})
    refused(hpcmarl(["exploitability", run]), "names env 'subprocess:getoutput'")
    refused(hpcmarl(["match", run, "random", "--episodes", "2"]), "names env 'subprocess:getoutput'")
    assert not marker.exists()


def test_pool_snapshot_of_a_user_openspiel_env_plays_when_named(tmp_path):
    path = "hpcmarl.envs.openspiel:game"
    snap = crafted_snapshot(tmp_path / "pool.h5", {**KUHN, "env": path,
                                                    "env_kwargs": json.dumps({"game": "kuhn_poker"})})
    refused(hpcmarl(["exploitability", snap]), f"names env '{path}'", f"--env-import {path}")
    p = hpcmarl(["exploitability", snap, "--json", "--env-import", path])
    assert p.returncode == 0, p.stderr
    assert 0.0 <= json.loads(p.stdout)["latest"] <= 6.0


def test_pool_snapshot_gymnasium_task_with_a_module_is_refused(tmp_path, marker_plugin):
    name, marker, env = marker_plugin
    task = f"{name}:Foraging-8x8-2p-2f-coop-v3"
    snap = crafted_snapshot(tmp_path / "lbf.h5", {**KUHN, "env": "lbf", "policy_group": "agent", "obs_dim": 12,
                                                  "n_actions": 6, "seats": "per_agent",
                                                  "env_kwargs": json.dumps({"task": task})})
    refused(hpcmarl(["match", snap, "random", "--episodes", "2"], env=env), f"{snap} names gymnasium id '{task}'",
            f"--env-import {task}")
    refused(hpcmarl(["exploitability", snap], env=env), f"gymnasium id '{task}'")
    assert not marker.exists()


def test_run_h5_league_groups_never_lead_outside_the_run(tmp_path):
    marker = tmp_path / "MARKER"
    run = league_run(tmp_path / "a" / "run", KUHN, groups=["../../evil"])  # run/pool/../../evil-v*.h5: beside the run
    crafted_snapshot(tmp_path / "a" / "evil-v0000000.h5", {**KUHN, "env": "subprocess:getoutput",
                                                           "env_kwargs": json.dumps({"cmd": f"touch {marker}"})})
    for args in (["exploitability", run], ["match", run, "random", "--episodes", "2"]):
        refused(hpcmarl(args), "run.h5 attribute 'league_groups' is not a list of group names")
    with h5py.File(os.path.join(run, "run.h5"), "r+") as f:  # what the analysis commands read from run.h5
        f.attrs["env"] = "subprocess:getoutput"
        f.attrs["config"] = yaml.safe_dump({"env": {"name": "subprocess:getoutput",
                                                    "kwargs": {"cmd": f"touch {marker}"}}, "plugins": ["os"]})
    for args in (["inspect", run], ["compare", run], ["league", run], ["export", run, "--out", str(tmp_path / "x")]):
        hpcmarl(args)
    assert not marker.exists()


# ---- trajectory files and indexes -----------------------------------------------------------------------------------
@pytest.fixture
def traj_run(user_run, tmp_path):
    """A copy of the run's trajectories (run.h5 and one actor file) and a second run beside it."""
    run, other = tmp_path / "run", tmp_path / "other"
    for d in (run, other):
        (d / "trajectories").mkdir(parents=True)
        shutil.copy(user_run / "run.h5", d / "run.h5")
        shutil.copy(user_run / "trajectories" / "actor-00000.h5", d / "trajectories" / "actor-00000.h5")
    return run, other


def test_actor_file_linking_outside_the_run_is_refused(traj_run):
    run, other = traj_run
    os.symlink(os.path.join("..", "..", "other", "trajectories", "actor-00000.h5"),
               run / "trajectories" / "actor-00001.h5")
    for args in (["index", str(run)], ["export", str(run), "--out", str(run.parent / "x")]):
        refused(hpcmarl(args), "actor-00001.h5: leads to", "outside the run directory")


@pytest.mark.parametrize("how", ["virtual", "external"])
def test_actor_file_keeping_data_elsewhere_is_refused(traj_run, how):
    run, other = traj_run
    a1 = run / "trajectories" / "actor-00001.h5"
    shutil.copy(run / "trajectories" / "actor-00000.h5", a1)
    secret = run.parent / "secret.bin"
    secret.write_bytes(b"\0" * 1024)
    with h5py.File(a1, "r+") as f:
        d = f["steps/env"]
        shape, dtype = d.shape, d.dtype
        del f["steps/env"]
        if how == "virtual":
            vl = h5py.VirtualLayout(shape=shape, dtype=dtype)
            vl[:] = h5py.VirtualSource(os.path.join("..", "..", "other", "trajectories", "actor-00000.h5"), "steps/env",
                                       shape=shape, dtype=dtype)
            f.create_virtual_dataset("steps/env", vl)
        else:
            f.create_dataset("steps/env", shape=shape, dtype=dtype,
                             external=[(str(secret), 0, int(np.prod(shape)) * np.dtype(dtype).itemsize)])
    for args in (["index", str(run), "--stats"], ["export", str(run), "--out", str(run.parent / "x")]):
        refused(hpcmarl(args), "actor-00001.h5: /steps/env", "keeps its data in another file")


@pytest.mark.parametrize("craft", ["absolute", "dotdot", "virtual"])
def test_index_whose_sources_lead_outside_the_run_is_refused(traj_run, craft):
    from hpcmarl.analysis.trajectory_index import build_index, open_index
    from hpcmarl.storage import StorageError

    run, other = traj_run
    path = build_index(str(run))
    open_index(str(run)).close()  # the index as built is fine
    outside = os.path.join("..", "..", "other", "trajectories", "actor-00000.h5")
    with h5py.File(path, "r+") as f:
        if craft == "absolute":
            f.attrs["sources"] = json.dumps(["/etc/passwd"])
        elif craft == "dotdot":
            f.attrs["sources"] = json.dumps([outside])
        else:  # sources as built, one virtual dataset reading the other run's file
            d = f["steps/env"]
            shape, dtype = d.shape, d.dtype
            del f["steps/env"]
            vl = h5py.VirtualLayout(shape=shape, dtype=dtype)
            vl[:] = h5py.VirtualSource(outside, "steps/env", shape=shape, dtype=dtype)
            f.create_virtual_dataset("steps/env", vl)
    for arg in (str(run), path):
        with pytest.raises(StorageError) as e:
            open_index(arg)
        assert "\n" not in str(e.value) and "refused" in str(e.value), str(e.value)
        assert "/etc/passwd" in str(e.value) or outside in str(e.value)


# ---- files that would make a reader read elsewhere, block or exhaust its memory -------------------------------------
# Each case runs the reader as on a shared login node: 60 s and 2 GiB of data segment at most (a hang fails the test,
# an allocation past the limit is a MemoryError traceback, not the one line required).
LIMITED = ["prlimit", f"--data={2 << 30}", "--"]


def reader(args, **kw):
    from launch import HPCMARL, run_cmd

    return run_cmd(LIMITED + HPCMARL + list(args), timeout=60, **kw)


@pytest.fixture
def shared_run(user_run, tmp_path):
    """A copy of a finished run (run.h5, checkpoints, one actor file) as someone else shared it, beside an
    ``elsewhere`` directory holding a secret and another run's run.h5."""
    run, elsewhere = tmp_path / "run", tmp_path / "elsewhere"
    shutil.copytree(user_run, run, ignore=shutil.ignore_patterns("actor-0000[1-9].h5", "*.lock"))
    elsewhere.mkdir()
    (elsewhere / "secret").write_bytes(b"root:x:0:0:root:/root:/bin/bash\n" * 64)
    shutil.copy(user_run / "run.h5", elsewhere / "run.h5")
    return run, elsewhere


def replace_dataset(f, name, **create):
    """Replace dataset ``name`` of the open file ``f`` by one made with ``create`` (shape and dtype kept)."""
    d = f[name]
    shape, dtype = d.shape, d.dtype
    del f[name]
    f.create_dataset(name, shape=create.pop("shape", shape), dtype=dtype, **create)


def zero_chunks(f, name, rows, chunk_rows=1 << 19):
    """A float64 column ``name`` of ``rows`` rows whose chunks all hold gzip-compressed zeros, written without
    compressing them each time: a few MB on disk, ``rows * 8`` bytes once read (a decompression bomb)."""
    import zlib

    d = f.create_dataset(name, shape=(rows,), dtype="f8", chunks=(chunk_rows,), compression="gzip")
    blob = zlib.compress(bytes(chunk_rows * 8), 9)
    for lo in range(0, rows, chunk_rows):
        d.id.write_direct_chunk((lo,), blob)


@pytest.mark.parametrize("craft", ["external_file", "external_link", "fifo", "dev_zero", "unwritten",
                                   "broken_link", "filter"])
def test_run_h5_reading_elsewhere_or_claiming_too_much_is_refused(shared_run, craft):
    run, elsewhere = shared_run
    with h5py.File(run / "run.h5", "r+") as f:
        n = f["episodes/return/agent"].shape[0]
        if craft == "external_file":  # the real table silently cut and a secret exported in its place, before
            replace_dataset(f, "episodes/return/agent", external=[(str(elsewhere / "secret"), 0, n * 8)])
        elif craft in ("external_link", "broken_link"):  # another file's metrics shown as this run's
            del f["metrics"]
            target = elsewhere / ("run.h5" if craft == "external_link" else "missing\nfile.h5")  # one line still
            f["metrics"] = h5py.ExternalLink(str(target), "/metrics")
        elif craft == "fifo":  # a reader blocked for ever
            os.mkfifo(elsewhere / "fifo")
            replace_dataset(f, "episodes/return/agent", external=[(str(elsewhere / "fifo"), 0, n * 8)])
        elif craft == "dev_zero":
            replace_dataset(f, "episodes/return/agent", shape=(1 << 30,), maxshape=(None,),
                            external=[("/dev/zero", 0, h5py.h5f.UNLIMITED)])
        elif craft == "unwritten":  # 8 GiB of fill values, no chunk written
            f["metrics"].create_dataset("huge", shape=(1 << 30,), dtype="f8", chunks=(1 << 16,))
        else:  # a filter plug-in HDF5 would look for and load
            f["metrics"].create_dataset("plugin", data=np.zeros(64), chunks=(64,), compression=32001,
                                        allow_unknown_filter=True)
    why = {"external_file": "keeps its data in another file (external storage in",
           "external_link": "keeps its data in another file (an external link to",
           "broken_link": "keeps its data in another file (an external link to",
           "fifo": "external storage in", "dev_zero": "external storage in /dev/zero",
           "unwritten": "/metrics/huge claims 8,192 MiB", "filter": "/metrics/plugin uses HDF5 filter 32001"}[craft]
    for args in (["inspect", str(run)], ["export", str(run), "--out", str(run.parent / "out")],
                 ["compare", str(run), str(run)], ["watch", str(run), "--count", "1"], ["plot", str(run), "-o",
                                                                                       str(run.parent / "p.png")]):
        line = refused(reader(args), f"{run / 'run.h5'}: /", why, "refused")
        assert "root:x:0" not in line
    assert not (run.parent / "out" / "episodes.csv").exists()


def test_run_h5_table_over_the_read_limit_is_refused_before_reading(shared_run):
    run, _ = shared_run
    with h5py.File(run / "run.h5", "r+") as f:  # 8 MB on disk, 4 GiB of zeros once decompressed
        zero_chunks(f, "eval/bomb", 1 << 29)
    refused(reader(["export", str(run), "--out", str(run.parent / "out")]), "reading /eval (536,870,912 rows)",
            "over the 512 MiB a reader allows (HPCMARL_READ_LIMIT_MB)")
    p = reader(["export", str(run), "--out", str(run.parent / "out"), "--no-trajectories"],
               env={"HPCMARL_READ_LIMIT_MB": "nonsense"})
    refused(p, "HPCMARL_READ_LIMIT_MB='nonsense': not a positive number of MiB")


def test_checkpoint_bomb_is_refused_and_inspect_reads_its_attributes_only(shared_run):
    run, _ = shared_run
    path = ckpt(run)
    with h5py.File(path, "r+") as f:  # 8 MB on disk, 8 GiB once read
        zero_chunks(f, "model/bomb", 1 << 30)
    assert os.path.getsize(path) < 16 << 20
    refused(reader(["evaluate", str(run), "--env-import", USER_ENV, "--episodes", "1"]),
            "over the 512 MiB a reader allows")
    p = reader(["inspect", str(run)])
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr


def test_checkpoint_network_larger_than_its_arrays_is_refused_before_it_is_built(user_run, tmp_path):
    path = crafted_checkpoint(user_run, tmp_path, lambda c: c["algo"].update(hidden=10 ** 9))
    refused(reader(["evaluate", path, "--env-import", USER_ENV, "--episodes", "1"]),
            "policy weights do not fit the config's networks")


@pytest.mark.parametrize("where", ["run", "checkpoint"])
def test_stored_config_alias_bomb_is_one_line(user_run, tmp_path, where):
    levels = ["&a0 [x, x, x, x, x, x, x, x, x, x]"] + [f"&a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]"
                                                      for i in range(1, 9)]
    bomb = "seed: [" + ", ".join(levels) + "]\n"  # 10^9 values in 1 KB of YAML, under a key that wants a number
    if where == "run":
        run = tmp_path / "run"
        shutil.copytree(user_run, run)
        with h5py.File(run / "run.h5", "r+") as f:
            f.attrs["config"] = bomb
        for args in (["compare", str(run), str(user_run)], ["export", str(run), "--out", str(tmp_path / "o")]):
            refused(reader(args), "its config expands to more than 100,000 values")
    else:
        path = crafted_checkpoint(user_run, tmp_path, lambda c: None)
        with h5py.File(path, "r+") as f:
            f.attrs["config"] = bomb
        refused(reader(["evaluate", path, "--env-import", USER_ENV]), "its stored config expands to more than")


def test_deeply_nested_yaml_is_one_line(tmp_path):
    deep = tmp_path / "deep.yaml"
    deep.write_text("env: " + "[" * 20000 + "]" * 20000 + "\n")
    refused(reader(["validate", str(deep), "--np", "1"]), f"config file {deep} is nested too deeply to be read")
    refused(reader(["validate", "configs/test_tiny.yaml", "--np", "1", "seed=" + "[" * 20000]), "config key 'seed'")


def test_index_over_an_actor_file_that_now_keeps_data_elsewhere_is_refused(shared_run):
    from hpcmarl.analysis.trajectory_index import build_index, open_index
    from hpcmarl.storage import StorageError

    run, elsewhere = shared_run
    build_index(str(run))
    actor = run / "trajectories" / "actor-00000.h5"
    with h5py.File(actor, "r+") as f:  # the index's source, changed after the index was built
        replace_dataset(f, "steps/env", external=[(str(elsewhere / "secret"), 0, f["steps/env"].shape[0] * 8)])
    with pytest.raises(StorageError, match="steps/env keeps its data in another file"):
        open_index(str(run))


def test_episode_of_2_to_the_25_steps_is_refused(shared_run):
    run, _ = shared_run
    with h5py.File(run / "trajectories" / "actor-00000.h5", "r+") as f:
        for d in f["steps"].values():
            for col in (d.values() if isinstance(d, h5py.Group) else [d]):
                if isinstance(col, h5py.Dataset):
                    col.resize((1 << 25,) + col.shape[1:])
        for name, col in f["episodes"].items():
            if isinstance(col, h5py.Dataset):
                col.resize((col.shape[0] + 1,) + col.shape[1:])
        f["episodes/length"][-1] = 1 << 25
        f["episodes/start"][-1] = 0
    for args in (["index", str(run), "--stats"], ["export", str(run), "--out", str(run.parent / "out")]):
        refused(reader(args), "actor-00000.h5: /steps/", "claims", "refused")


def test_actor_file_linking_outside_is_not_counted(shared_run):
    run, elsewhere = shared_run
    (elsewhere / "trajectories").mkdir()
    shutil.copy(run / "trajectories" / "actor-00000.h5", elsewhere / "trajectories" / "actor-00000.h5")
    os.symlink(elsewhere / "trajectories" / "actor-00000.h5", run / "trajectories" / "actor-00001.h5")
    for args in (["inspect", str(run)], ["compare", str(run), str(run)]):
        refused(reader(args), "actor-00001.h5: leads to", "outside the run directory")
    p = reader(["watch", str(run), "--count", "1"])
    assert p.returncode == 0 and "actor-00001" not in p.stdout, p.stdout


def test_pool_snapshot_of_a_huge_network_is_refused_before_it_is_built(tmp_path):
    run = league_run(tmp_path / "league", KUHN)
    snap = os.path.join(run, "pool", "main-v0000000.h5")
    with h5py.File(snap, "r+") as f:
        f.attrs["obs_dim"] = 10 ** 9
    for args in (["exploitability", snap], ["exploitability", run], ["match", snap, "random", "--episodes", "2"]):
        refused(reader(args), "its attributes describe a network of 16,000,000,050 parameters, it holds 226")
    other_game = crafted_snapshot(tmp_path / "other.h5", {**KUHN, "obs_dim": 12})  # 12 inputs, Kuhn has 11
    refused(reader(["match", other_game, "random", "--episodes", "2"]), "a policy does not fit kuhn_poker")
