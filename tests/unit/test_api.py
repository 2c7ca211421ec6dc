"""The public API: ``hpcmarl.__all__`` (docs/extending/api.md) resolves, stays cheap to import, and register_env adds
environments without replacing a built-in unless told."""
import os
import subprocess
import sys

import pytest

import hpcmarl
from hpcmarl.envs import registry

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_every_public_name_resolves_and_is_listed():
    names = [n for n in hpcmarl.__all__ if n != "__version__"]
    assert len(names) == len(set(names))
    for n in names:
        assert getattr(hpcmarl, n) is not None, n
    assert set(hpcmarl.__all__) <= set(dir(hpcmarl))
    assert hpcmarl.register_algorithm is __import__("hpcmarl.algos.base", fromlist=["register"]).register
    assert hpcmarl.load_policy.__module__ == "hpcmarl.analysis.evaluate"
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        hpcmarl.no_such_name  # noqa: B018


def test_the_api_page_documents_every_public_name():
    with open(os.path.join(ROOT, "docs", "extending", "api.md")) as f:
        page = f.read()
    missing = [n for n in hpcmarl.__all__ if n != "__version__" and f"## `{n}`" not in page]
    assert not missing, f"docs/extending/api.md has no section for {missing}"


def test_import_hpcmarl_loads_neither_torch_nor_mpi():
    code = ("import sys, hpcmarl; heavy = [m for m in ('torch', 'mpi4py', 'horovod', 'h5py') if m in sys.modules]; "
            "print(heavy); hpcmarl.load_config; print('torch' in sys.modules, 'mpi4py' in sys.modules)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120,
                       env={**os.environ, "PYTHONPATH": ROOT})
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == ["[]", "False False"], p.stdout  # load_config needs neither either


@pytest.fixture
def clean_registry(monkeypatch):
    monkeypatch.setattr(registry, "REGISTRY", dict(registry.REGISTRY))
    return registry.REGISTRY


def test_register_env_adds_an_environment(clean_registry, monkeypatch):
    monkeypatch.syspath_prepend(ROOT)
    from hpcmarl.envs import make_parallel_env

    e = hpcmarl.register_env("walk_test_v0", "examples.walk_env:parallel_env", {"walker": ["walker_*"]},
                             kwargs={"n": 3}, description="three walkers")
    assert registry.REGISTRY["walk_test_v0"] is e and e.factory == "examples.walk_env:parallel_env"
    env = make_parallel_env("walk_test_v0")
    assert env.possible_agents == ["walker_0", "walker_1", "walker_2"]
    assert registry.resolve_groups(env.possible_agents, None, "walk_test_v0") == {"walker": env.possible_agents}
    assert hpcmarl.register_env("walk_test_v0", "examples.walk_env:parallel_env", {"walker": ["walker_*"]},
                                kwargs={"n": 3}, description="three walkers") == e  # the same entry again: a no-op
    with pytest.raises(ValueError, match="already registered: examples.walk_env:parallel_env"):
        hpcmarl.register_env("walk_test_v0", "examples.walk_env:parallel_env", {"w": ["walker_*"]})
    # a callable is kept as its path; groups omitted: the env is made once, its agents grouped by name prefix
    from examples.walk_env import parallel_env

    e = hpcmarl.register_env("walk_test_v1", parallel_env, kwargs={"n": 2})
    assert e.factory == "examples.walk_env:parallel_env" and e.groups == {"walker": ["walker_0", "walker_1"]}
    assert e.cooperative and not e.turn_based
    for bad, match in ((lambda: None, "not reachable as 'module:callable'"), ("no_colon", "not a 'module:callable'")):
        with pytest.raises(ValueError, match=match):
            hpcmarl.register_env("walk_test_v2", bad, {"a": ["*"]})
    for name in ("", "a:b", "two words"):
        with pytest.raises(ValueError, match="bad name"):
            hpcmarl.register_env(name, "examples.walk_env:parallel_env", {"a": ["*"]})
    with pytest.raises(ValueError, match="unknown option"):
        hpcmarl.register_env("walk_test_v3", "examples.walk_env:parallel_env", {"a": ["*"]}, colour="red")


def test_register_env_refuses_to_replace_a_built_in_unless_told(clean_registry):
    before = registry.REGISTRY["simple_spread_v3"]
    with pytest.raises(ValueError, match=r"'simple_spread_v3' is already registered \(built in\)"):
        hpcmarl.register_env("simple_spread_v3", "mpe2.simple_spread_v3:parallel_env", {"all": ["agent_*"]})
    assert registry.REGISTRY["simple_spread_v3"] is before
    assert hpcmarl.register_env("simple_spread_v3", before.factory, before.groups, before.kwargs,
                                before.description) == before  # identical: allowed, nothing changes
    e = hpcmarl.register_env("simple_spread_v3", "mpe2.simple_spread_v3:parallel_env", {"all": ["agent_*"]},
                             kwargs={"N": 2, "max_cycles": 25}, replace=True)
    assert registry.REGISTRY["simple_spread_v3"] is e and e.groups == {"all": ["agent_*"]}
    assert "simple_spread_v3" in registry.BUILTIN_ENVS
