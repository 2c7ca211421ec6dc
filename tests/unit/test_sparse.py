"""Dynamic sparse training (docs/algorithms/qmix.md#sparse-networks-and-rigl, #pitfalls): Erdos-Renyi allocation,
RigL drop/grow against a slow numpy reference, and masks surviving Adam steps, target copies and checkpoints."""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from hpcmarl.algos.sparse import SparseMasks, cosine_drop_fraction, erdos_renyi_densities, linear_flops

torch.set_num_threads(1)


def mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 24), nn.ReLU(), nn.Linear(24, 4))


WEIGHTS = ["0.weight", "2.weight", "4.weight"]


# ------------------------------------------------------------------------------------------------
# Erdos-Renyi allocation
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sparsity", [0.5, 0.8, 0.9, 0.95])
def test_er_proportional_and_total(sparsity):
    shapes = {"a": (64, 16), "b": (64, 64), "c": (6, 64), "d": (128, 40)}
    dens = erdos_renyi_densities(shapes, sparsity)
    assert set(dens) == set(shapes)
    sparse = [n for n, d in dens.items() if d < 1.0]
    assert sparse
    # density * fan_in * fan_out / (fan_in + fan_out) is the same eps for every non-dense layer
    eps = [dens[n] * shapes[n][0] * shapes[n][1] / (shapes[n][0] + shapes[n][1]) for n in sparse]
    assert max(eps) - min(eps) < 1e-9 * max(eps)
    assert all(0.0 < d <= 1.0 for d in dens.values())
    total = sum(math.prod(s) for s in shapes.values())
    active = sum(round(dens[n] * math.prod(s)) for n, s in shapes.items())
    assert abs(active - (1 - sparsity) * total) <= len(shapes)


def test_er_dense_fallback():
    shapes = {"tiny": (4, 3), "big1": (256, 256), "big2": (300, 200)}
    dens = erdos_renyi_densities(shapes, 0.9)
    # the tiny layer would get density eps * 7 / 12 >> 1: it is kept dense and the rest re-balanced
    assert dens["tiny"] == 1.0
    assert dens["big1"] < 1.0 and dens["big2"] < 1.0
    r1, r2 = (dens[n] * math.prod(shapes[n]) / sum(shapes[n]) for n in ("big1", "big2"))
    assert r1 == pytest.approx(r2, rel=1e-12)
    total = sum(math.prod(s) for s in shapes.values())
    active = 12 + sum(dens[n] * math.prod(shapes[n]) for n in ("big1", "big2"))
    assert active == pytest.approx(round(0.1 * total), abs=1e-6)
    # a chain of layers where one going dense pushes the next one over 1 as well
    chain = {"t1": (2, 2), "t2": (8, 8), "big": (512, 512)}
    d2 = erdos_renyi_densities(chain, 0.5)
    assert d2["t1"] == 1.0 and d2["t2"] == 1.0 and d2["big"] < 1.0
    assert d2["big"] * 512 * 512 + 4 + 64 == pytest.approx(round(0.5 * (4 + 64 + 512 * 512)))
    assert erdos_renyi_densities(shapes, 0.0) == {n: 1.0 for n in shapes}


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5])
def test_er_bad_sparsity(bad):
    with pytest.raises(ValueError):
        erdos_renyi_densities({"a": (4, 4)}, bad)


# ------------------------------------------------------------------------------------------------
# Masks: construction and topology updates
# ------------------------------------------------------------------------------------------------
def test_initial_mask_keeps_largest_weights():
    model = mlp(1)
    dense = {n: p.detach().clone() for n, p in model.named_parameters()}
    masks = SparseMasks(model, 0.8, generator=torch.Generator().manual_seed(3))
    assert sorted(masks.masks) == WEIGHTS  # biases stay dense
    params = dict(model.named_parameters())
    for n, m in masks.masks.items():
        w = dense[n].abs()
        n_on = int(m.sum())
        assert n_on == max(1, round(masks.densities[n] * m.numel()))
        assert w[m].min() > w[~m].max()  # every kept |w| beats every dropped |w|
        assert torch.equal(params[n].detach(), torch.where(m, dense[n], torch.zeros(())))  # masked in place
    for n in ("0.bias", "2.bias", "4.bias"):
        assert torch.equal(params[n].detach(), dense[n])
    assert masks.sparsity == pytest.approx(0.8, abs=len(WEIGHTS) / sum(c[1] for c in masks.active_counts().values()))


def reference_update(w: np.ndarray, g: np.ndarray, m: np.ndarray, fraction: float):
    """Slow RigL step in the paper's words: drop the floor(zeta n_on) active weights of smallest |w|,
    grow as many weights that were inactive before the drop with the largest |g|."""
    act = [i for i in range(m.size) if m.flat[i]]
    inact = [i for i in range(m.size) if not m.flat[i]]
    k = min(math.floor(fraction * len(act)), len(inact))
    drop = sorted(act, key=lambda i: abs(w.flat[i]))[:k]
    grow = sorted(inact, key=lambda i: -abs(g.flat[i]))[:k]
    return set(drop), set(grow)


def test_topology_update_matches_reference_and_keeps_sparsity():
    model = mlp(2)
    masks = SparseMasks(model, 0.85, generator=5)
    counts0 = masks.active_counts()
    sparsity0 = masks.sparsity
    params = dict(model.named_parameters())
    rng = np.random.default_rng(0)
    assert masks.version == 0
    for it in range(30):
        with torch.no_grad():  # new weights everywhere (even where masked): only the mask decides
            for n, m in masks.masks.items():
                params[n].copy_(torch.randn(m.shape, generator=torch.Generator().manual_seed(it)))
        grads = {n: torch.from_numpy(rng.normal(size=tuple(m.shape))).float() for n, m in masks.masks.items()}
        fraction = float(rng.uniform(0.05, 0.6))
        before = {n: (params[n].detach().numpy().copy(), m.numpy().copy()) for n, m in masks.masks.items()}
        out = masks.topology_update(model, grads, fraction)
        total_k = 0
        for n, m in masks.masks.items():
            w, m0 = before[n]
            drop, grow = reference_update(w, grads[n].numpy(), m0, fraction)
            total_k += len(drop)
            m1 = m.numpy()
            assert drop and grow and not (drop & grow)
            assert set(np.flatnonzero(m0 & ~m1)) == drop
            assert set(np.flatnonzero(~m0 & m1)) == grow
            w1 = params[n].detach().numpy()
            assert np.all(w1.flat[sorted(grow)] == 0.0)  # grown weights start at exactly 0
            assert np.all(w1[~m1] == 0.0)  # dropped (and all inactive) weights are zero
            kept = m0 & m1  # grown never come from the dropped set, so kept = active before and after
            assert np.array_equal(w1[kept], w[kept])  # surviving weights untouched
        assert out == {"dropped": total_k, "grown": total_k}
        assert masks.active_counts() == counts0
        assert masks.sparsity == sparsity0
        assert masks.version == it + 1
    assert masks.topology_update(model, grads, 0.0) == {"dropped": 0, "grown": 0}
    assert masks.version == 30  # nothing changed, no new version


def test_topology_update_ties_deterministic_and_never_regrow_dropped():
    def run():
        model = mlp(3)
        masks = SparseMasks(model, 0.9, generator=11)
        zero = {n: torch.zeros(m.shape) for n, m in masks.masks.items()}  # all-tied gradients
        before = {n: m.clone() for n, m in masks.masks.items()}
        masks.topology_update(model, zero, 0.5)
        for n, m in masks.masks.items():
            k = math.floor(0.5 * int(before[n].sum()))
            # exactly k left and k new ones arrived: none of the dropped came straight back
            assert int((before[n] & ~m).sum()) == k and int((m & ~before[n]).sum()) == k
        return {n: m.clone() for n, m in masks.masks.items()}
    a, b = run(), run()
    assert all(torch.equal(a[n], b[n]) for n in a)


# ------------------------------------------------------------------------------------------------
# Masks survive optimizer steps, target copies and checkpoints
# ------------------------------------------------------------------------------------------------
def train_steps(model, masks, opt, steps, gen, update_at=(), fraction=0.3):
    x = torch.randn(64, 8, generator=gen)
    y = torch.randn(64, 4, generator=gen)
    for t in range(steps):
        opt.zero_grad()
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        dense = {n: p.grad.clone() for n, p in model.named_parameters() if n in masks.masks}
        masks.mask_grads(model)
        opt.step()
        masks.apply(model)
        masks.apply_optimizer(opt, model)
        if t in update_at:
            masks.topology_update(model, dense, fraction, opt)


@pytest.mark.parametrize("make_opt", [
    lambda p: torch.optim.Adam(p, lr=1e-2),
    lambda p: torch.optim.Adam(p, lr=1e-2, amsgrad=True, weight_decay=1e-3),
    lambda p: torch.optim.RMSprop(p, lr=1e-3, momentum=0.9),
    lambda p: torch.optim.SGD(p, lr=1e-2, momentum=0.9),
])
def test_masks_survive_optimizer_steps(make_opt):
    model = mlp(4)
    masks = SparseMasks(model, 0.9, generator=1)
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = make_opt(model.parameters())
    train_steps(model, masks, opt, 40, torch.Generator().manual_seed(0), update_at=(9, 19, 29))
    assert masks.version == 3
    params = dict(model.named_parameters())
    moments = 0
    for n, m in masks.masks.items():
        p = params[n]
        assert torch.all(p.detach()[~m] == 0)
        assert torch.any(p.detach()[m] != start[n][m])  # active weights did train
        for v in opt.state[p].values():
            if torch.is_tensor(v) and v.shape == p.shape:
                assert torch.all(v[~m] == 0)
                moments += 1
    assert moments >= len(WEIGHTS)
    assert masks.active_counts() == SparseMasks(mlp(4), 0.9).active_counts()


def test_target_copies_are_masked():
    model = mlp(5)
    dense_target = copy.deepcopy(model)  # copied before masking: dense
    dense_sd = copy.deepcopy(dense_target.state_dict())
    masks = SparseMasks(model, 0.8, generator=2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    target = copy.deepcopy(model)
    train_steps(model, masks, opt, 20, torch.Generator().manual_seed(1), update_at=(4, 14))
    with torch.no_grad():  # polyak update: target still has weights where masks moved away
        for pt, p in zip(target.parameters(), model.parameters()):
            pt.mul_(0.5).add_(0.5 * p)
    for net in (target, dense_target):
        tp = dict(net.named_parameters())
        assert any(torch.any(tp[n].detach()[~m] != 0) for n, m in masks.masks.items())  # the test can fail
        masks.apply(net)
        for n, m in masks.masks.items():
            assert torch.all(tp[n].detach()[~m] == 0)
    hard = mlp(6)
    hard.load_state_dict(dense_sd)
    hp = dict(hard.named_parameters())
    assert all(torch.any(hp[n].detach()[~m] != 0) for n, m in masks.masks.items())
    masks.apply(hard)
    assert all(torch.all(hp[n].detach()[~m] == 0) for n, m in masks.masks.items())


def test_state_arrays_round_trip():
    model = mlp(7)
    masks = SparseMasks(model, 0.85, generator=3)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    train_steps(model, masks, opt, 12, torch.Generator().manual_seed(2), update_at=(5, 10))
    arrays = masks.state_arrays()
    assert all(k.startswith("mask/") for k in arrays)
    assert all(v.dtype == np.uint8 for k, v in arrays.items() if k != "mask/version")
    assert int(arrays["mask/version"]) == 2
    weights = {k: v.detach().clone() for k, v in model.state_dict().items()}

    fresh = mlp(8)  # different dense init -> different initial masks
    fresh_masks = SparseMasks(fresh, 0.85, generator=9)
    assert any(not torch.equal(fresh_masks.masks[n], masks.masks[n]) for n in WEIGHTS)
    fresh.load_state_dict({k: torch.randn_like(v) for k, v in weights.items()})  # dense garbage
    fresh_masks.load_state_arrays({k: np.array(v) for k, v in arrays.items()})
    fresh_masks.apply(fresh)
    assert fresh_masks.version == 2
    fp = dict(fresh.named_parameters())
    for n in WEIGHTS:
        assert torch.equal(fresh_masks.masks[n], masks.masks[n])
        assert fresh_masks.masks[n].dtype == torch.bool
        assert torch.all(fp[n].detach()[~masks.masks[n]] == 0)
    with pytest.raises(ValueError):
        fresh_masks.load_state_arrays({**arrays, "mask/0.weight": np.ones((3, 3), np.uint8)})


# ------------------------------------------------------------------------------------------------
# Schedules and FLOPs
# ------------------------------------------------------------------------------------------------
def test_cosine_drop_fraction():
    assert cosine_drop_fraction(0, 0.5, 1000) == pytest.approx(0.5)
    assert cosine_drop_fraction(500, 0.5, 1000) == pytest.approx(0.25)
    assert cosine_drop_fraction(250, 0.4, 1000) == pytest.approx(0.2 * (1 + math.sqrt(0.5)))
    assert cosine_drop_fraction(1000, 0.5, 1000) == 0.0
    assert cosine_drop_fraction(5000, 0.5, 1000) == 0.0
    vals = [cosine_drop_fraction(t, 0.5, 100) for t in range(101)]
    assert all(a >= b for a, b in zip(vals, vals[1:]))


def test_linear_flops():
    # 3 rows through a 5 -> 4 layer with 6 active weights: each row does 6 multiplies + 6 adds
    # (36 for 3 rows) and 4 bias adds (12 for 3 rows) = 48
    assert linear_flops(6, 4, 3) == 48
    # dense 5 -> 4 on one row: 20 multiply-adds = 40, plus 4 bias = 44
    assert linear_flops(20, 4, 1) == 44
