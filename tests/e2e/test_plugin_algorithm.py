"""Write your own algorithm: REINFORCE with a batch-mean baseline, defined and registered in this file (nothing under
hpcmarl/ names it), trained on the synchronous rollout flow under mpirun with outputs, resume and inspect; registered a
second time with ``league=True`` it trains in league mode too (the core asks the registry entry, not the name).

Every rank imports this module because the run's config lists it in ``plugins``; ``hpcmarl evaluate`` of its
checkpoints imports it (and builds the example env) only when the person names them: ``--plugins``, ``--env-import``."""
import glob
import json
import os
import sys
from dataclasses import dataclass

import pytest
import torch

# the public API only (hpcmarl.__all__)
from hpcmarl import (
    Algorithm,
    ConfigError,
    Learner,
    batch_from_unrolls,
    flat_params,
    gae,
    load_torch_state_arrays,
    masked_mean,
    policy_inference,
    register_algorithm,
    torch_state_arrays,
)


@dataclass
class ReinforceConfig:
    name: str = "reinforce"
    unroll_length: int = 10  # the rollout flow's T
    lr: float = 0.01
    gamma: float = 0.99
    hidden: int = 32  # hidden/layers: the default inference policy (hpcmarl.models.policy_inference) reads them
    layers: int = 1

    def validate(self, cfg):
        if self.lr <= 0:
            raise ConfigError("config key 'algo.lr': must be > 0")


class ReinforceLearner:
    def __init__(self, spec, cfg, device, seed, init_seed):
        torch.manual_seed(init_seed)
        self.spec, self.cfg = spec, cfg
        self.policies = policy_inference(spec, cfg).policies  # the actors' parameter layout
        self.params = list(self.policies.parameters())
        self.opt = torch.optim.Adam(self.params, lr=cfg.lr)

    def update(self, unrolls, reduce_grads=None, reduce_sums=None, env_steps=0):
        b = batch_from_unrolls(self.spec, unrolls, "cpu")
        loss, rows = 0.0, 0.0
        for g in self.spec.groups:
            n = g.name
            acting = b[f"{n}/alive"][:-1]
            zeros = torch.zeros_like(b[f"{n}/alive"])
            _, ret = gae(b[f"{n}/reward"], zeros, b[f"{n}/done"], self.cfg.gamma, 1.0)  # reward-to-go
            adv = ret - masked_mean(ret, acting)
            dist = self.policies[n].dist(b[f"{n}/obs"][:-1], b[f"{n}/action_mask"] if g.discrete else None)
            loss = loss - masked_mean(dist.log_prob(b[f"{n}/action"]) * adv, acting)
            rows += float(acting.sum())
        self.opt.zero_grad()
        loss.backward()
        if reduce_grads is not None:
            reduce_grads(self.params, rows)
        self.opt.step()
        return {"loss": float(loss)}

    def policy_flat(self):
        return flat_params(self.params)

    def state_arrays(self):
        return torch_state_arrays(self.policies, self.opt)

    def load_state_arrays(self, arrays):
        load_torch_state_arrays(self.policies, self.opt, arrays, "cpu")


register_algorithm(Algorithm("reinforce", ReinforceConfig, ReinforceLearner), replace=True)
# the same learner, declared fit for league mode: its policy_flat is policy_inference's layout (pool snapshots are
# rebuilt from algo.hidden/algo.layers) and it runs on the synchronous rollout flow
register_algorithm(Algorithm("reinforce_league", ReinforceConfig, ReinforceLearner, league=True), replace=True)

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/launch.py, also on ranks
from launch import hpcmarl, mpirun, requires_mpirun  # noqa: E402

pytestmark = [requires_mpirun, pytest.mark.mpi]
MODULE, ENV = "tests.e2e.test_plugin_algorithm", "examples.walk_env:parallel_env"
PLUGIN = f"plugins=[{MODULE}]"
ARGS = ["configs/simple_spread_mappo.yaml", PLUGIN, "algo={name: reinforce}", f"env.name={ENV}",
        "env.num_envs=8", "output.progress_s=5", "runtime.timeout_s=60", "output.checkpoint_every=10"]


def test_learner_satisfies_the_protocol():
    from hpcmarl import trust
    from hpcmarl.envs import probe_spec

    with trust.allowing([ENV]):  # a Python caller names the env path it imports
        spec = probe_spec(ENV)
    assert isinstance(ReinforceLearner(spec, ReinforceConfig(), "cpu", 0, 0), Learner)


def test_plugin_algorithm_trains_resumes_and_inspects(tmp_path):
    run = tmp_path / "reinforce"
    for updates in (30, 60):  # the second launch resumes from the first one's checkpoint
        p = mpirun(3, ["train"] + ARGS + [f"run_dir={run}", f"train.max_updates={updates}"], timeout=300)
        assert p.returncode == 0, p.stderr[-3000:]
    assert "resumed from ckpt-000000030.h5" in p.stdout
    out = hpcmarl(["inspect", str(run), "--json", "--window", "100"])
    assert out.returncode == 0, out.stderr
    s = json.loads(out.stdout)
    assert s["algo"] == "reinforce" and s["updates"] == 60
    g = s["groups"]["walker"]
    assert g["return_last"] > g["return_first"] + 1.0, g
    with open(run / "config.yaml") as f:
        assert MODULE in f.read()  # a resumed run imports it again (its config lists it)
    # evaluate reads the checkpoint's stored config: it imports the plug-in and the env only when named
    p = hpcmarl(["evaluate", str(run), "--episodes", "4", "--json", "--plugins", MODULE, "--env-import", ENV])
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    assert r["algo"] == "reinforce" and r["groups"]["walker"]["episodes"] == 4
    for flags, hint in (([], f"pass --plugins {MODULE}"), (["--plugins", MODULE], f"pass --env-import {ENV}")):
        p = hpcmarl(["evaluate", str(run), "--episodes", "1"] + flags)
        lines = p.stderr.strip().splitlines()
        assert p.returncode == 2 and len(lines) == 1 and hint in lines[0], p.stderr
        assert lines[0].startswith("hpcmarl: error: ") and "code is imported only when you name it" in lines[0]


def test_plugin_config_checks_and_unknown_plugins(tmp_path):
    p = hpcmarl(["train"] + ARGS + [f"run_dir={tmp_path / 'x'}", "algo.lr=-1"])
    assert p.returncode == 2 and "algo.lr" in p.stderr
    p = hpcmarl(["train", "configs/simple_spread_mappo.yaml", "plugins=[no_such_plugin_xyz]", "algo={name: reinforce}"])
    assert p.returncode == 2 and "no_such_plugin_xyz" in p.stderr
    p = hpcmarl(["train", "configs/simple_spread_mappo.yaml", "algo={name: reinforce}"])
    assert p.returncode == 2 and "unknown algorithm 'reinforce'" in p.stderr and "plugins" in p.stderr
    # league mode asks the registry entry: "reinforce" was registered without league=True
    p = hpcmarl(["train", "configs/league_kuhn.yaml", PLUGIN, "algo={name: reinforce}", f"run_dir={tmp_path / 'lg'}"])
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1 and lines[0].startswith("hpcmarl: error: config key 'algo.name': "
                                                                          "league mode trains "), p.stderr
    assert "reinforce_league" in lines[0] and "not reinforce " in lines[0] and "league=True" in lines[0], lines[0]
    assert not (tmp_path / "lg").exists()


def test_plugin_declaring_league_support_trains_in_league_mode(tmp_path):
    """Kuhn poker with a PSRO-style league (learner, actor, league rank): the plug-in's snapshots reach the pool, the
    league measures their exploitability and a pool member plays a match, with no edit under hpcmarl/."""
    run = tmp_path / "league"
    groups = "[{name: main, strategy: meta_nash, snapshot_every: 2, restart: true, self_play: 0}]"
    p = mpirun(3, ["train", "configs/league_kuhn.yaml", PLUGIN, "algo={name: reinforce_league, unroll_length: 4, "
                   "hidden: 16}", f"run_dir={run}", f"league.groups={groups}", "env.num_envs=8", "league.eval_games=4",
                   "train.max_updates=5", "train.max_wall_s=0", "runtime.timeout_s=60", "output.progress_s=5"],
               timeout=240)
    assert p.returncode == 0, p.stderr[-3000:]
    assert len(glob.glob(str(run / "pool" / "main-v*.h5"))) >= 2
    from hpcmarl import Run

    t = Run(str(run))._table("league/exploitability")
    assert len(t["member"]) >= 1 and all(0 < x < 1.5 for x in t["latest"]), t  # NashConv: 0.917 for random play
    out = hpcmarl(["inspect", str(run), "--json"])
    assert out.returncode == 0 and json.loads(out.stdout)["algo"] == "reinforce_league", out.stderr
    out = hpcmarl(["match", str(run), "random", "--episodes", "4", "--json"])  # pool policies need no plug-in
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert r["wins"] + r["draws"] + r["losses"] == 4
