"""Learners on a CUDA device (``learner.device: cuda``): every algorithm's update lands where the CPU's does, actors
get CPU arrays, checkpoints move between devices, QMIX and MAST learn. Skipped where torch sees no GPU (CI, this
project's VMs); run them on a GPU node with ``pytest tests/unit/test_cuda.py`` (docs/development/tests.md)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from test_qmix import loss_and_grad, make_cfg, mixed_replay, train_matrix

from hpcmarl.algos.matrace import MATraceLearner
from hpcmarl.algos.ppo import PPOConfig, PPOLearner
from hpcmarl.algos.qmix.learning import QMIXLearner
from hpcmarl.config import load_config
from hpcmarl.envs import probe_spec
from hpcmarl.launch import pick_device
from hpcmarl.models import flat_params

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="torch sees no CUDA device")
CPU, GPU = torch.device("cpu"), torch.device("cuda")


@pytest.fixture(autouse=True)
def full_float32():
    """Full float32 matrix products on the GPU (no TF32), so that CPU and GPU differ by rounding only."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def params_of(learner) -> np.ndarray:
    return flat_params(learner.params).astype(np.float64)


def rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-12))


def check_devices(make, records, updates: int = 2, tol: float = 1e-3):
    """``make(device)`` -> a learner. The CUDA learner starts from the CPU's weights, its updates move them the same
    way (relative difference of the change under ``tol``), it hands actors CPU arrays, and its checkpoint loads into
    a CPU learner (and back) exactly, after which both update alike again."""
    cpu, gpu = make(CPU), make(GPU)
    assert all(p.device.type == "cuda" for p in gpu.params)
    start = params_of(cpu)
    np.testing.assert_array_equal(params_of(gpu), start)
    flat = gpu.policy_flat()
    assert isinstance(flat, np.ndarray) and flat.dtype == np.float32
    np.testing.assert_array_equal(flat, cpu.policy_flat())
    for _ in range(updates):
        s_cpu, s_gpu = cpu.update(records), gpu.update(records)
    assert s_cpu.keys() == s_gpu.keys()
    assert all(np.isfinite(v) for v in s_gpu.values() if isinstance(v, float))
    moved = params_of(cpu) - start
    assert np.linalg.norm(moved) > 0
    assert rel(params_of(gpu) - start, moved) < tol, rel(params_of(gpu) - start, moved)
    np.testing.assert_allclose(gpu.policy_flat(), cpu.policy_flat(), rtol=0, atol=1e-4)

    arrays = gpu.state_arrays()  # what a checkpoint stores: plain host arrays
    assert all(isinstance(v, np.ndarray) and v.dtype != object for v in arrays.values())
    back = make(CPU)
    back.load_state_arrays(arrays)
    np.testing.assert_array_equal(params_of(back), params_of(gpu))
    again = make(GPU)  # and a CPU checkpoint resumed on the GPU (the optimizer's state moves along)
    again.load_state_arrays(back.state_arrays())
    np.testing.assert_array_equal(params_of(again), params_of(gpu))
    before = params_of(back)
    back.update(records)
    again.update(records)
    assert rel(params_of(again) - before, params_of(back) - before) < tol


PPO_CASES = [  # a recurrent MAPPO with agent ids and a state critic; IPPO on two groups; alive masks with both
    # running normalisations; Gaussian heads
    ("simple_spread_v3", {"N": 3, "max_cycles": 6},
     dict(name="mappo", recurrent=True, agent_id=True, critic_input="state")),
    ("simple_tag_v3", {"max_cycles": 5}, dict(name="ippo")),
    ("counting_v0", {"n_agents": 2, "max_cycles": 4, "die_at": 2}, dict(name="mappo", reward_norm=True)),
    ("simple_spread_v3", {"N": 2, "max_cycles": 6, "continuous_actions": True}, dict(name="mappo")),
]


@pytest.mark.parametrize("env,kwargs,algo", PPO_CASES, ids=["rmappo_state", "ippo_groups", "masks_norms", "gauss"])
def test_ppo_learner_on_cuda_follows_the_cpu(collect, env, kwargs, algo):
    spec = probe_spec(env, kwargs)
    cfg = PPOConfig(unroll_length=5, hidden=16, layers=1, epochs=2, minibatches=2, **algo)
    c = collect(env, 5, 3, 2, kwargs, seed=1, hidden=16, layers=1, flat=PPOLearner(spec, cfg, CPU, 0).policy_flat(),
                recurrent=cfg.recurrent, agent_id=cfg.agent_id)
    check_devices(lambda dev: PPOLearner(spec, cfg, dev, 0), c.records)


@pytest.mark.parametrize("extra", [[], ["algo.agent_returns=true", "algo.correction=per_agent"]])
def test_matrace_learner_on_cuda_follows_the_cpu(collect, extra):
    kwargs = {"N": 3, "max_cycles": 6}
    spec = probe_spec("simple_spread_v3", kwargs)
    cfg = load_config(None, ["algo.name=matrace", "algo.hidden=16", "algo.layers=1", *extra]).algo
    c = collect("simple_spread_v3", 6, 3, 2, kwargs, seed=2, hidden=16, layers=1)
    check_devices(lambda dev: MATraceLearner(spec, cfg, dev, seed=0), c.records)


@pytest.mark.parametrize("sparse", [False, True], ids=["qmix", "mast"])
def test_qmix_and_mast_learn_on_cuda(sparse):
    """The matrix game trained with the learner on the GPU: the best joint action is found; MAST's masked weights
    stay exactly zero there; its checkpoint loads into a CPU learner exactly."""
    torch.set_num_threads(1)
    cfg = make_cfg(**(dict(sparsity=0.8, topology_every=10, topology_end=250, drop_fraction=0.3, mellowmax_omega=10,
                           td_lambda=0.6, td_lambda_after=600, recent_episodes=32, recent_fraction=0.5, hidden=64)
                      if sparse else {}))
    learner, stats, ret = train_matrix(cfg, 160 if sparse else 150, masked=sparse, device=GPU)
    assert all(p.device.type == "cuda" for p in learner.params)
    assert ret == pytest.approx(3.0)
    if sparse:
        assert sum(s["topology/grown"] for s in stats) > 0
        params = dict(learner.net.named_parameters())
        for name, mask in learner.masks.masks.items():
            assert mask.device.type == "cuda" and torch.all(params[name][~mask] == 0)
    other = QMIXLearner(probe_spec("matrix_v0", {"masked": sparse}), cfg, CPU, seed=99)
    other.load_state_arrays(learner.state_arrays())
    np.testing.assert_array_equal(params_of(other), params_of(learner))
    assert other.steps == learner.steps


@pytest.mark.parametrize("extra", [{}, dict(mellowmax_omega=10, reward_norm=True, reward_center=False)],
                         ids=["qmix", "mellowmax_scaled"])
def test_recurrent_qmix_loss_on_mixed_lengths_follows_the_cpu(extra):
    """SMAX's QMIX/MAST learners on the GPU: the GRU steps running episodes only (lengths sorted on the device), the
    mixer mixes real steps only, TD(lambda) targets from standardised or scaled rewards; a batch of 7 episode
    lengths gives the CPU's loss and gradient."""
    torch.set_num_threads(1)
    spec = probe_spec("matrix_v0", {"masked": True})
    cfg = make_cfg(recurrent=True, episode_limit=12, td_lambda=0.6, td_lambda_after=0, **extra)
    replay, eps = mixed_replay(spec)
    out = {}
    for dev in (CPU, GPU):
        learner = QMIXLearner(spec, cfg, dev, 0)
        if learner.reward_norm is not None:  # statistics with a clearly non-zero mean: centring would show
            r = torch.from_numpy(np.concatenate([ep["reward"] for ep in eps]) + 2.0)
            learner.reward_norm.update(r, torch.ones_like(r))
        loss, grad = loss_and_grad(learner, replay.batch(np.arange(len(eps)), dev))
        out[dev.type] = loss.item(), grad.cpu()
    assert out["cuda"][0] == pytest.approx(out["cpu"][0], rel=1e-4)
    assert rel(out["cuda"][1].double().numpy(), out["cpu"][1].double().numpy()) < 1e-3


def test_pick_device_spreads_local_ranks_over_the_gpus():
    n = torch.cuda.device_count()
    for local_rank in range(3):
        cfg = load_config(None, ["learner.device=cuda"])
        assert pick_device(cfg, local_rank) == torch.device(f"cuda:{local_rank % n}")
    assert pick_device(load_config(None, []), 0).type == "cuda"  # auto
    assert pick_device(load_config(None, ["learner.device=cuda:0"]), 5) == torch.device("cuda:0")
    assert pick_device(load_config(None, ["learner.device=cpu"]), 0) == CPU
