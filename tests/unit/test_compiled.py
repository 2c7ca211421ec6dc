"""learner.compile's cache (hpcmarl.compiled): created private, refused where anyone else could have written code into
it, and the compiled function's fallback to the eager one."""
from __future__ import annotations

import os

import pytest
import torch

from hpcmarl import compiled
from hpcmarl.config import ConfigError, load_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def xdg(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    return tmp_path


def test_the_cache_is_made_private_under_xdg_cache_home(xdg, capsys):
    path = compiled._private_cache()
    assert path == str(xdg / "hpcmarl" / "inductor") == compiled.cache_path()
    assert os.stat(path).st_mode & 0o777 == 0o700
    assert os.stat(os.path.dirname(path)).st_mode & 0o077 == 0
    assert compiled._private_cache() == path  # and again, as it is left
    assert capsys.readouterr().err == ""


def _tamper_mode(path):
    os.chmod(path, 0o777)


def _tamper_file(path):
    sub = os.path.join(path, "fxgraph", "ab")
    os.makedirs(sub)
    with open(os.path.join(sub, "entry"), "w") as f:
        f.write("x")
    os.chmod(os.path.join(sub, "entry"), 0o666)


def _foreign_file(path):
    with open(os.path.join(path, "kernel.so"), "w") as f:
        f.write("x")
    os.chown(os.path.join(path, "kernel.so"), 65534, 65534)


def _foreign_dir(path):
    os.chown(path, 65534, 65534)


def _symlink(path):
    os.rmdir(path)
    os.makedirs(path + "-elsewhere", mode=0o700)
    os.symlink(path + "-elsewhere", path)


def _open_parent(path):
    os.chmod(os.path.dirname(path), 0o777)


@pytest.mark.parametrize("tamper,why", [
    (_tamper_mode, "writable by its group or by others (mode 777)"),
    (_tamper_file, "entry is writable by its group or by others (mode 666)"),
    (_foreign_file, "kernel.so is owned by uid 65534"),
    (_foreign_dir, "inductor is owned by uid 65534"),
    (_symlink, "inductor is a symbolic link"),
    (_open_parent, "hpcmarl is writable by its group or by others (mode 777)"),
])
def test_a_tampered_or_foreign_cache_is_refused_in_one_line(xdg, capsys, tamper, why):
    if os.geteuid() != 0 and tamper in (_foreign_file, _foreign_dir):
        pytest.skip("chown to another user needs root")
    path = compiled._private_cache()
    capsys.readouterr()
    tamper(path)
    assert compiled._private_cache() is None
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and why in err and "compiling without a cache" in err, err


def test_an_entry_gone_while_checked_is_not_a_tampering(xdg, monkeypatch):
    """Another rank's compiler renames its temporary files while this one walks the cache."""
    path = compiled._private_cache()
    real_walk = os.walk
    monkeypatch.setattr(os, "walk", lambda p: ((root, dirs, files + ["tmp-gone"])
                                               for root, dirs, files in real_walk(p)))
    assert compiled.unsafe(path) is None
    assert compiled.unsafe(path + "-missing").endswith("inductor-missing is not a directory")


def test_an_unsafe_cache_compiles_in_a_private_temporary_directory(xdg, monkeypatch, capsys):
    import torch._functorch.config as functorch_config
    import torch._inductor.config as inductor_config

    monkeypatch.setattr(compiled, "_CONFIGURED", [])
    monkeypatch.setattr(inductor_config, "fx_graph_cache", True)
    monkeypatch.setattr(functorch_config, "enable_autograd_cache", True)
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "/tmp/elsewhere")
    os.makedirs(xdg / "hpcmarl" / "inductor")
    os.chmod(xdg / "hpcmarl" / "inductor", 0o775)
    assert compiled.configure_cache() is False
    used = os.environ["TORCHINDUCTOR_CACHE_DIR"]
    assert os.path.basename(used).startswith("hpcmarl-inductor-") and os.stat(used).st_mode & 0o777 == 0o700
    assert not inductor_config.fx_graph_cache and not functorch_config.enable_autograd_cache
    assert "mode 775" in capsys.readouterr().err
    monkeypatch.setattr(compiled, "_CONFIGURED", [])
    os.chmod(xdg / "hpcmarl" / "inductor", 0o700)
    assert compiled.configure_cache() is True  # a safe one is used whatever TORCHINDUCTOR_CACHE_DIR said
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(xdg / "hpcmarl" / "inductor")


def test_a_failing_compiler_falls_back_to_the_eager_function_once(xdg, monkeypatch, capsys):
    calls = []

    def broken(fn, dynamic):
        def run(*a):
            calls.append("compiled")
            raise RuntimeError("C++ compile failed: g++ not found\nmore detail")
        return run

    monkeypatch.setattr(torch, "compile", broken)
    monkeypatch.setattr(compiled, "configure_cache", lambda: True)
    f = compiled.compiled(lambda x: x + 1, "the step")
    assert f(1) == 2 and f(2) == 3
    assert calls == ["compiled"]  # not tried again
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "compiling the step failed (RuntimeError: C++ compile failed: g++ not found)" in err


@pytest.mark.parametrize("setting,steps,early,want", [
    ("auto", 9_999, False, False), ("auto", 10_000, False, True), ("auto", 10**6, True, False), (True, 1, True, True),
    (False, 10**9, False, False)])
def test_auto_compiles_long_runs(setting, steps, early, want, monkeypatch):
    monkeypatch.delenv("HPCMARL_NO_COMPILE", raising=False)
    assert compiled.wanted(setting, steps, early) is want
    monkeypatch.setenv("HPCMARL_NO_COMPILE", "1")  # auto is off; an explicit true stays on
    assert compiled.wanted(setting, steps, early) is (setting is True)


def test_prepare_counts_the_runs_gradient_steps(monkeypatch):
    monkeypatch.delenv("HPCMARL_NO_COMPILE", raising=False)
    class Learner:
        def __init__(self):
            self.asked = 0

        def compile_update(self):
            self.asked += 1
            return True

    # 2,048 env steps per update (16 x 128, one actor), 4 x 4 gradient steps: 2M env steps = 977 updates = 15,632
    cfg = load_config(None, ["algo.name=ippo", "algo.unroll_length=16", "env.num_envs=128", "algo.epochs=4",
                             "algo.minibatches=4", "train.total_env_steps=2000000"])
    said, learner = [], Learner()
    assert compiled.prepare(learner, cfg, 1, said.append) and learner.asked == 1
    assert "15,632 gradient steps" in said[0]
    cfg.train.max_updates = 600  # 9,600 gradient steps: below auto's threshold
    assert not compiled.prepare(learner, cfg, 1, said.append) and learner.asked == 1
    cfg.train.max_updates = 0
    for key, value in (("target_return", -60.0), ("max_wall_s", 300.0)):  # runs that may end early: not auto
        setattr(cfg.train, key, value)
        assert not compiled.prepare(learner, cfg, 1) and learner.asked == 1
        setattr(cfg.train, key, None if key == "target_return" else 0.0)
    cfg.train.max_wall_s = 3600.0
    assert compiled.prepare(learner, cfg, 1) and learner.asked == 2
    cfg.learner.compile = False
    assert not compiled.prepare(learner, cfg, 1) and learner.asked == 2
    assert not compiled.prepare(object(), load_config(None, ["learner.compile=true"]), 1)  # no compiled form


@pytest.mark.parametrize("overrides,want", [
    (["learner.compile=true"], True), (["learner.compile=false"], False),
    (["learner.compile=auto", "train.total_env_steps=20000"], False),  # 2 actors x 2 copies x 5 steps, 2 epochs:
    (["learner.compile=auto", "train.total_env_steps=200000"], True),  # 2,000 and 20,000 gradient steps
    (["learner.compile=auto", "train.total_env_steps=200000", "train.target_return=0"], False),
    (None, False)])  # NIGT: the gradient flow sends no unrolls
def test_every_rank_tells_whether_the_first_update_compiles(overrides, want, monkeypatch):
    """Actors and the league rank bound their wait for the first update's weights by runtime.startup_timeout_s when
    the learners may compile it: they tell from the config alone, as prepare decides."""
    monkeypatch.delenv("HPCMARL_NO_COMPILE", raising=False)
    cfg = load_config(os.path.join(ROOT, "configs", "test_tiny.yaml" if overrides else "nigt_spread.yaml"),
                      overrides or ["learner.compile=true"])
    assert compiled.first_update_compiles(cfg, 2) is want


@pytest.mark.parametrize("value", ["maybe", 1, "fast"])
def test_learner_compile_takes_true_false_or_auto(value):
    with pytest.raises(ConfigError, match="learner.compile"):
        load_config(None, [f"learner.compile={value}"])
