"""hpcmarl.trust: nothing a file names is imported or called unless the person named it (config file, flags)."""
import os
import sys
import uuid

import pytest
import yaml

from hpcmarl import trust
from hpcmarl.config import ConfigError, from_dict, load_config
from hpcmarl.envs import make_env


@pytest.fixture(autouse=True)
def fresh_allow_list():
    """Each test starts from an empty allow-list (what a new ``hpcmarl`` process has) and leaves it as it was."""
    saved = set(trust._ALLOWED)
    trust._ALLOWED.clear()
    yield
    trust._ALLOWED.clear()
    trust._ALLOWED.update(saved)


@pytest.fixture
def marker_module(tmp_path, monkeypatch):
    """A module (fresh name, on sys.path) that creates ``tmp_path/MARKER`` when imported: ``(name, marker)``."""
    name = f"marker_mod_{uuid.uuid4().hex[:12]}"
    marker = tmp_path / "MARKER"
    (tmp_path / f"{name}.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name, marker
    sys.modules.pop(name, None)


def crafted_env(tmp_path) -> dict:
    return {"name": "subprocess:getoutput", "kwargs": {"cmd": f"touch {tmp_path / 'MARKER'}"}}


def one_line(e) -> str:
    msg = str(e.value)
    assert "\n" not in msg, msg
    return msg


def test_make_env_refuses_an_unnamed_path_before_anything_runs(tmp_path):
    with pytest.raises(trust.NotAllowed) as e:
        make_env("subprocess:getoutput", {"cmd": f"touch {tmp_path / 'MARKER'}"})
    assert "--env-import subprocess:getoutput" in one_line(e) and "not a registered environment" in str(e.value)
    assert not (tmp_path / "MARKER").exists()


def test_a_stored_config_imports_nothing_it_names(tmp_path, marker_module):
    name, marker = marker_module
    with pytest.raises(trust.NotAllowed) as e:  # plug-ins: refused before any is imported
        from_dict({"plugins": [name]})
    assert f"--plugins {name}" in one_line(e)
    assert not marker.exists() and name not in sys.modules
    with trust.reading("checkpoints/ckpt-000000010.h5"), pytest.raises(trust.NotAllowed) as e:
        from_dict({"env": crafted_env(tmp_path)})
    assert one_line(e).startswith("checkpoints/ckpt-000000010.h5 names env 'subprocess:getoutput', which is not a "
                                  "registered environment; code is imported only when you name it: pass --env-import "
                                  "subprocess:getoutput")
    assert not (tmp_path / "MARKER").exists()


def test_registered_envs_and_builtin_algorithms_need_nothing():
    cfg = from_dict({"env": {"name": "matrix_v0"}, "algo": {"name": "qmix"}})
    assert cfg.env.name == "matrix_v0" and cfg.algo.name == "qmix" and not trust._ALLOWED


def test_named_paths_are_allowed_and_nothing_else(marker_module):
    name, marker = marker_module
    with trust.allowing(["hpcmarl.testing:counting_env", name]):
        env = make_env("hpcmarl.testing:counting_env")
        assert env.possible_agents == ["agent_0", "agent_1"]
        cfg = from_dict({"env": {"name": "hpcmarl.testing:counting_env"}, "plugins": [name]})
        assert cfg.env.name == "hpcmarl.testing:counting_env" and marker.exists()
        with pytest.raises(trust.NotAllowed):  # another callable of an allowed module is not named
            make_env("hpcmarl.testing:matrix_env")
    with pytest.raises(trust.NotAllowed):  # allowing() ends with its block
        make_env("hpcmarl.testing:counting_env")
    with trust.allowing(["hpcmarl.testing"]), pytest.raises(trust.NotAllowed):  # a module (--plugins) calls nothing
        make_env("hpcmarl.testing:counting_env")


def test_the_users_config_file_names_what_it_imports(tmp_path, marker_module):
    name, marker = marker_module
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump({"env": {"name": "hpcmarl.testing:counting_env"}, "plugins": [name]}))
    cfg = load_config(str(path))
    assert cfg.env.name == "hpcmarl.testing:counting_env" and marker.exists()
    assert make_env(cfg.env.name).possible_agents == ["agent_0", "agent_1"]  # the actors build it later
    cfg = load_config(None, ["env.name=hpcmarl.testing:target_env"])  # overrides are the person's too
    assert cfg.env.name == "hpcmarl.testing:target_env"


def test_import_user_module_and_load_plugins_check_first(marker_module):
    from hpcmarl.algos.base import load_plugins
    from hpcmarl.trust import import_user_module

    name, marker = marker_module
    with pytest.raises(trust.NotAllowed):
        import_user_module(name)
    with trust.allowing(["json"]), pytest.raises(trust.NotAllowed):  # all checked before the first import
        load_plugins(["json", name])
    assert not marker.exists() and name not in sys.modules
    with trust.allowing([name]):
        import_user_module(name)
    assert marker.exists()


@pytest.mark.parametrize("env", ["lbf", "rware"])
def test_gymnasium_task_with_a_module_is_refused_unless_named(env, marker_module):
    name, marker = marker_module
    task = f"{name}:" + ("Foraging-8x8-2p-2f-coop-v3" if env == "lbf" else "rware-tiny-2ag-v2")
    with trust.reading("pool/main-v0000001.h5"), pytest.raises(trust.NotAllowed) as e:
        make_env(env, {"task": task})
    assert one_line(e).startswith(f"pool/main-v0000001.h5 names gymnasium id {task!r} (env.kwargs.task of {env})")
    assert f"pass --env-import {task}" in str(e.value) and not marker.exists()
    with trust.allowing([task]):  # named: gymnasium imports the module, then makes the registered id
        make_env(env, {"task": task}).close()
    assert marker.exists()


def test_cli_flags_and_config_imports_are_checked():
    with pytest.raises(ValueError, match="MODULE:CALLABLE"):
        trust.allow_cli(["just_a_module"])
    with pytest.raises(ValueError, match="dotted module name"):
        trust.allow_cli([], ["a:b"])
    trust.allow_cli(["m.x:f"], ["p.q"])
    assert trust.allowed("m.x:f") and trust.allowed("m.x", "plugin") and trust.allowed("p.q", "plugin")
    assert not trust.allowed("p.q:f") and not trust.allowed("m.x:g")
    data = {"plugins": ["a.b"], "env": {"name": "m:f", "kwargs": {"task": "g:Env-v0"}},
            "actors": {"variants": [{"env_kwargs": {"task": "h:Env-v1"}}, {"obs_scale": -1}]}}
    assert trust.config_imports(data) == ["a.b", "m:f", "g:Env-v0", "h:Env-v1"]
    assert trust.config_imports({"env": {"name": "lbf", "kwargs": {"task": "Foraging-8x8-2p-2f-coop-v3"}}}) == []


def test_a_refused_import_is_a_one_line_config_error_path_for_the_cli(tmp_path):
    """NotAllowed is a ValueError (the CLI's exit 2), not swallowed into another message by from_dict's checks."""
    assert issubclass(trust.NotAllowed, ValueError)
    with pytest.raises(trust.NotAllowed):
        from_dict({"env": crafted_env(tmp_path), "plugins": []})
    with pytest.raises(ConfigError, match="plugins"):  # malformed plugins stay a config error
        from_dict({"plugins": "x"})
    assert not os.path.exists(tmp_path / "MARKER")
