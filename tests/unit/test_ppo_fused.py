"""PPO's written-out gradient step (hpcmarl.algos.ppo_fused) against autograd on the same minibatch."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from hpcmarl.algos import ppo_fused
from hpcmarl.algos.ppo import PPOConfig, PPOLearner
from hpcmarl.envs import probe_spec

CPU = torch.device("cpu")
ENVS = [  # deaths mid-episode (alive masks); two groups; action masks come from every env (all True here)
    ("counting_v0", {"n_agents": 2, "max_cycles": 4, "die_at": 2}),
    ("simple_spread_v3", {"N": 3, "max_cycles": 6}),
    ("simple_tag_v3", {"max_cycles": 5}),
]


def both_grads(learner, records, seed):
    """(autograd's, the written-out) gradients and statistics of the loss on every row of ``records``, after moving
    the stored log-probs and values away from the current ones so that both clip ranges are crossed (with
    ``algo.decoupled_clip``, the proximal log-probs are moved too, differently)."""
    b = learner.batch_from_unrolls(records)
    learner.advantages(b)
    gen = torch.Generator().manual_seed(seed)
    if learner.cfg.decoupled_clip:
        learner.proximal_logp(b)
        for g in learner.spec.groups:
            x = b[f"{g.name}/logp_prox"]
            b[f"{g.name}/logp_prox"] = x + 0.3 * torch.randn(x.shape, generator=gen)
    for g in learner.spec.groups:
        for key, scale in (("logp", 0.4), ("value", 0.5)):
            x = b[f"{g.name}/{key}"]
            b[f"{g.name}/{key}"] = x + scale * torch.randn(x.shape, generator=gen)
    T, B = b[f"{learner.spec.groups[0].name}/reward"].shape[:2]
    rows = torch.arange(T * B)
    idx_t, idx_b = rows // B, rows % B
    obs = {g.name: b[f"{g.name}/obs"][idx_t, idx_b] for g in learner.spec.groups}
    state = b["state"][idx_t, idx_b] if learner.spec.state_dim else None
    out = []
    for step in (lambda: learner.autograd_grads(b, idx_t, idx_b, obs, state, None),
                 lambda: learner.fused_grads(b, idx_t, idx_b)):
        stats = step()
        out.append(([p.grad.clone() for p in learner.params], stats))
    return out


@pytest.mark.parametrize("value_clip", [0.0, 0.2])
@pytest.mark.parametrize("algo,agent_id", [("mappo", False), ("ippo", False), ("mappo", True), ("ippo", True)])
@pytest.mark.parametrize("env,kwargs", ENVS, ids=[e[0] for e in ENVS])
def test_written_out_gradients_equal_autograds(collect, env, kwargs, algo, agent_id, value_clip):
    spec = probe_spec(env, kwargs)
    cfg = PPOConfig(name=algo, unroll_length=5, hidden=16, layers=2, value_clip=value_clip, agent_id=agent_id,
                    entropy_coef=0.05, clip=0.1)
    learner = PPOLearner(spec, cfg, CPU, 0)
    assert learner.fused
    c = collect(env, 5, 3, 2, kwargs, seed=2, hidden=16, layers=2, flat=learner.policy_flat(), agent_id=agent_id)
    (auto, auto_stats), (fused, fused_stats) = both_grads(learner, c.records, seed=5)
    for a, f in zip(auto, fused):
        assert torch.allclose(a, f, rtol=1e-4, atol=1e-6 * a.abs().max().item() + 1e-9), (a - f).abs().max()
    assert any(a.abs().max() > 0 for a in auto)
    assert auto_stats.keys() == fused_stats.keys()
    for k, v in auto_stats.items():
        assert fused_stats[k] == pytest.approx(v, rel=1e-4, abs=1e-6), k
    # the perturbation crossed the clip range on both sides: the clipped branch was exercised
    assert all(0 < auto_stats[f"{g.name}/clip_fraction"] < 1 for g in spec.groups)


@pytest.mark.parametrize("env,kwargs", ENVS, ids=[e[0] for e in ENVS])
def test_written_out_gradients_equal_autograds_with_decoupled_clip(collect, env, kwargs):
    spec = probe_spec(env, kwargs)
    cfg = PPOConfig(unroll_length=5, hidden=16, layers=2, entropy_coef=0.05, clip=0.1, decoupled_clip=True)
    learner = PPOLearner(spec, cfg, CPU, 0)
    c = collect(env, 5, 3, 2, kwargs, seed=2, hidden=16, layers=2, flat=learner.policy_flat())
    (auto, auto_stats), (fused, fused_stats) = both_grads(learner, c.records, seed=5)
    for a, f in zip(auto, fused):
        assert torch.allclose(a, f, rtol=1e-4, atol=1e-6 * a.abs().max().item() + 1e-9), (a - f).abs().max()
    assert any(a.abs().max() > 0 for a in auto)
    for k, v in auto_stats.items():
        assert fused_stats[k] == pytest.approx(v, rel=1e-4, abs=1e-6), k
    assert all(0 < auto_stats[f"{g.name}/clip_fraction"] < 1 for g in spec.groups)


def test_other_networks_keep_autograd():
    spec = probe_spec("simple_spread_v3", {"N": 2, "max_cycles": 6})
    assert not PPOLearner(spec, PPOConfig(recurrent=True, hidden=8), CPU, 0).fused
    cont = probe_spec("simple_spread_v3", {"N": 2, "max_cycles": 6, "continuous_actions": True})
    assert not PPOLearner(cont, PPOConfig(hidden=8), CPU, 0).fused
    learner = PPOLearner(spec, PPOConfig(hidden=8), CPU, 0)
    learner.model.policies[spec.groups[0].name].net[1] = torch.nn.ReLU()  # not the tanh MLP it knows
    assert not ppo_fused.supported(learner.model, learner.cfg)


def _batch(collect, learner, env="simple_spread_v3", kwargs=None):
    kwargs = kwargs or {"N": 3, "max_cycles": 6}
    c = collect(env, 5, 3, 2, kwargs, seed=2, hidden=16, layers=2, flat=learner.policy_flat())
    b = learner.batch_from_unrolls(c.records)
    learner.advantages(b)
    T, B = b[f"{learner.spec.groups[0].name}/reward"].shape[:2]
    rows = torch.arange(T * B)
    return b, rows // B, rows % B


@pytest.mark.parametrize("max_norm", [0.01, 1e6])
def test_the_whole_step_clips_and_steps_as_torch(collect, max_norm):
    """The step one compiled learner takes (ppo_fused.step with clipping and Adam, here eager): the gradients and
    norm of torch.nn.utils.clip_grad_norm_ after the unclipped step, clipping (0.01) or not (1e6), and over three
    steps the parameters and Adam state of torch.optim.Adam(fused=True) on them, in the optimizer's own state."""
    spec = probe_spec("simple_spread_v3", {"N": 3, "max_cycles": 6})
    cfg = PPOConfig(unroll_length=5, hidden=16, layers=2, max_grad_norm=max_norm, lr=0.01)
    torch_, ours = PPOLearner(spec, cfg, CPU, 0), PPOLearner(spec, cfg, CPU, 0)
    b, idx_t, idx_b = _batch(collect, torch_)
    for _ in range(3):
        stats = torch_.fused_grads(b, idx_t, idx_b)
        assert "grad_norm" not in stats
        norm = float(torch.nn.utils.clip_grad_norm_(torch_.params, max_norm))
        torch_.opt.step()
        got = ours.fused_grads(b, idx_t, idx_b, whole=True)
        assert got["grad_norm"] == pytest.approx(norm, rel=1e-5)
        assert (norm > max_norm) == (max_norm == 0.01)
        for p, q in zip(torch_.params, ours.params):
            assert torch.allclose(p.grad, q.grad, rtol=1e-3, atol=1e-6)  # the steps drift apart by rounding
            assert torch.allclose(p, q, rtol=1e-5, atol=1e-6), (p - q).abs().max()
    want, got = torch_.state_arrays(), ours.state_arrays()
    assert want.keys() == got.keys()
    for k in (k for k in want if k.startswith(("model/", "optim/"))):  # _batch's advantages moved value_norm
        assert np.allclose(want[k], got[k], rtol=1e-4, atol=1e-6), k
    assert any(k.endswith("exp_avg_sq") for k in want)


@pytest.mark.slow
def test_the_compiled_step_equals_the_eager_one(collect, tmp_path, monkeypatch):
    """learner.compile: torch.compile's program gives the eager step's gradients, statistics and parameters after
    clipping and Adam (to float rounding),
    and two learners of one seed train to the same parameters, bit for bit (deterministic per seed)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    spec = probe_spec("simple_spread_v3", {"N": 3, "max_cycles": 6})
    cfg = PPOConfig(name="mappo", unroll_length=5, hidden=16, layers=2, epochs=2, minibatches=2)
    eager, fast, again = (PPOLearner(spec, cfg, CPU, 0) for _ in range(3))
    assert fast.compile_update() and again.compile_update()
    b, idx_t, idx_b = _batch(collect, eager)
    want = eager.fused_grads(b, idx_t, idx_b, whole=True)
    got = fast.fused_grads(b, idx_t, idx_b, whole=True)
    again.fused_grads(b, idx_t, idx_b, whole=True)  # the same step as fast took
    assert want.keys() == got.keys()
    for k, v in want.items():
        assert got[k] == pytest.approx(v, rel=1e-4, abs=1e-6), k
    for e, f in zip(eager.params, fast.params):
        assert torch.allclose(e.grad, f.grad, rtol=1e-4, atol=1e-6 * e.grad.abs().max().item() + 1e-9)
        assert torch.allclose(e, f, rtol=1e-5, atol=1e-6)
    c = _records(collect, eager)
    for learner in (fast, again):
        for _ in range(3):
            learner.update(c)
    assert all(torch.equal(p, q) for p, q in zip(fast.params, again.params))
    assert any((tmp_path / "hpcmarl" / "inductor").iterdir())  # the cache went where hpcmarl put it


def _records(collect, learner):
    return collect("simple_spread_v3", 5, 3, 2, {"N": 3, "max_cycles": 6}, seed=3, hidden=16, layers=2,
                   flat=learner.policy_flat()).records
