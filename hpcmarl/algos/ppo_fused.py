"""PPO's gradient step without autograd for the common case: discrete actions, feed-forward tanh MLP policies and
critics (:func:`hpcmarl.models.mlp`, agent ids allowed). The forward pass keeps each layer's output, and the backward
pass is written out: per layer two matrix products, a column sum and ``tanh_backward``, and the loss's gradient with
respect to the logits and values in a few vectorised ops. The gradients equal autograd's to float rounding
(``tests/unit/test_ppo_fused.py``); eager autograd's per-op cost was most of a small network's update on the CPU
(docs/environments/batched.md)."""
from __future__ import annotations

from typing import Dict, List, Tuple

import torch
from torch import nn

from hpcmarl.models import ActorCritic, AgentId, Tanh, joint_input


def _layers(net: nn.Module):
    """``(agent_ids, [(weight, bias), ...])`` of an :func:`~hpcmarl.models.mlp` (optionally after
    :class:`~hpcmarl.models.AgentId`), or None for any other network."""
    mods = list(net) if isinstance(net, nn.Sequential) else [net]
    ids = None
    if mods and isinstance(mods[0], AgentId):
        ids, mods = mods[0], list(mods[1]) if len(mods) == 2 and isinstance(mods[1], nn.Sequential) else None
    if not mods or len(mods) % 2 != 1:
        return None
    lins = mods[0::2]
    if not all(isinstance(m, nn.Linear) for m in lins) or not all(isinstance(m, Tanh) for m in mods[1::2]):
        return None
    return ids, [(m.weight, m.bias) for m in lins]


def supported(model: ActorCritic, cfg) -> bool:
    """The written-out step applies: no GRU, discrete actions, every policy and critic a tanh MLP."""
    if cfg.recurrent or not all(g.discrete for g in model.spec.groups):
        return False
    nets = list(model.policies[g.name].net for g in model.spec.groups) + list(model.critics.values())
    return all(_layers(n) is not None for n in nets)


def _forward(layers, x: torch.Tensor) -> List[torch.Tensor]:
    """``[x, a_1, ..., a_L, out]``: the input, each hidden layer's tanh output, the head's output (rows flattened)."""
    acts = [x]
    for i, (w, b) in enumerate(layers):
        y = torch.addmm(b, acts[-1], w.t())
        if i < len(layers) - 1:  # tanh as 2 sigmoid(2y) - 1, in place (hpcmarl.models.Tanh's kernel)
            y = y.mul_(2.0).sigmoid_().mul_(2.0).sub_(1.0)
        acts.append(y)
    return acts


def _backward(layers, acts: List[torch.Tensor], g: torch.Tensor, grads: Dict[nn.Parameter, torch.Tensor]) -> None:
    """Add the gradients of every layer's weight and bias for ``g`` = d loss / d output to ``grads``."""
    for i in range(len(layers) - 1, -1, -1):
        w, b = layers[i]
        for p, d in ((w, g.t() @ acts[i]), (b, g.sum(0))):
            grads[p] = grads[p] + d if p in grads else d
        if i:
            g = torch.ops.aten.tanh_backward(g @ w, acts[i])


def ratios(new_logp: torch.Tensor, old_logp: torch.Tensor, prox_logp: torch.Tensor = None):
    """``(ratio, prox_logp, prox_ratio, weight)`` of PPO's surrogate: ``ratio`` = new / behaviour; the clip applies to
    ``prox_ratio`` = new / proximal, the clipped term weighted by ``weight`` = proximal / behaviour (decoupled PPO;
    without ``prox_logp`` the proximal policy is the behaviour policy: ``prox_ratio`` is ``ratio``, ``weight`` 1)."""
    ratio = torch.exp(new_logp - old_logp)
    if prox_logp is None:
        return ratio, old_logp, ratio, 1.0
    return ratio, prox_logp, torch.exp(new_logp - prox_logp), torch.exp(prox_logp - old_logp)


def _input(ids, x: torch.Tensor) -> torch.Tensor:
    return ids(x) if ids is not None else x


@torch.no_grad()
def loss_grads(model: ActorCritic, cfg, mb: Dict[str, torch.Tensor]) -> Tuple[Dict[nn.Parameter, torch.Tensor],
                                                                               Dict[str, torch.Tensor]]:
    """The gradient of PPO's loss (:func:`hpcmarl.algos.ppo.ppo_loss`, summed over groups) with respect to every
    parameter of ``model``, and the loss's statistics (0-d tensors), on one minibatch: ``mb`` holds per group
    ``<g>/obs`` ``[M, n, d]``, ``action``, ``action_mask``, ``logp``, ``adv``, ``value``, ``ret``, ``alive``,
    optionally ``logp_prox`` (``algo.decoupled_clip``) and, for a centralized critic, ``critic_in`` ``[M, D]``.
    Plain tensor code: ``torch.compile`` fuses it (``learner.compile``: :func:`step`)."""
    grads: Dict[nn.Parameter, torch.Tensor] = {}
    stats: Dict[str, torch.Tensor] = {}
    for g in model.spec.groups:
        n = g.name
        obs, mask = mb[f"{n}/obs"], mb[f"{n}/alive"]
        M, k = mask.shape
        ids, pol = _layers(model.policies[n].net)
        pa = _forward(pol, _input(ids, obs).reshape(M * k, -1))
        z = pa[-1].masked_fill_(~mb[f"{n}/action_mask"].reshape(M * k, -1), -1e9)
        z = z.sub_(z.amax(-1, keepdim=True))
        logp_all = z - z.exp().sum(-1, keepdim=True).log_()
        prob = logp_all.exp()
        act = mb[f"{n}/action"].reshape(-1, 1).long()
        new_logp = logp_all.gather(1, act).squeeze_(1)
        entropy = -(prob * logp_all).sum(-1)
        cids, crit = _layers(model.critics[n])
        if model.centralized:
            ca = _forward(crit, mb["critic_in"])
            v = ca[-1].reshape(M * k)
        else:
            ca = _forward(crit, _input(cids, obs).reshape(M * k, -1))
            v = ca[-1].squeeze(-1)
        m = mask.reshape(-1)
        w = m / m.sum().clamp_min(1.0)  # the masked mean's weights
        old_logp, adv = mb[f"{n}/logp"].reshape(-1), mb[f"{n}/adv"].reshape(-1)
        old_v, ret = mb[f"{n}/value"].reshape(-1), mb[f"{n}/ret"].reshape(-1)
        prox_logp = mb.get(f"{n}/logp_prox")
        ratio, prox_logp, prox_ratio, weight = ratios(new_logp, old_logp,
                                                      None if prox_logp is None else prox_logp.reshape(-1))
        log_ratio = new_logp - prox_logp
        clipped = prox_ratio.clamp(1 - cfg.clip, 1 + cfg.clip) * weight
        pg = -torch.min(ratio * adv, clipped * adv)
        # d pg / d new_logp: -adv * ratio where the unclipped term is the minimum or the ratio is inside the clip range
        inside = (prox_ratio >= 1 - cfg.clip) & (prox_ratio <= 1 + cfg.clip)
        g_logp = torch.where((ratio * adv <= clipped * adv) | inside, -adv * ratio, 0.0) * w
        err = v - ret
        v_err = err * err
        g_verr = 2.0 * err
        if cfg.value_clip > 0:
            delta = v - old_v
            v_clip = old_v + delta.clamp(-cfg.value_clip, cfg.value_clip)
            err2 = v_clip - ret
            first = v_err >= err2 * err2
            g_verr = torch.where(first, g_verr, 2.0 * err2 * (delta.abs() <= cfg.value_clip))
            v_err = torch.maximum(v_err, err2 * err2)
        # the logits: d log p(a) = onehot(a) - p; d entropy = -p (log p + H); the loss has -entropy_coef * entropy
        g_z = prob * (-g_logp)[:, None]
        g_z.scatter_add_(1, act, g_logp[:, None])
        g_z.addcmul_(prob * (logp_all + entropy[:, None]), (cfg.entropy_coef * w)[:, None])
        g_v = g_verr * (0.5 * cfg.value_coef) * w
        _backward(pol, pa, g_z, grads)
        _backward(crit, ca, g_v.reshape(M, k) if model.centralized else g_v[:, None], grads)
        stats.update({
            f"{n}/policy_loss": (pg * w).sum(), f"{n}/value_loss": 0.5 * (v_err * w).sum(),
            f"{n}/entropy": (entropy * w).sum(), f"{n}/approx_kl": (((prox_ratio - 1) - log_ratio) * w).sum(),
            f"{n}/clip_fraction": (((prox_ratio - 1).abs() > cfg.clip).float() * w).sum()})
    return grads, stats


def minibatch(spec, centralized: bool, decoupled: bool, b: Dict[str, torch.Tensor], idx_t: torch.Tensor,
              idx_b: torch.Tensor) -> Dict[str, torch.Tensor]:
    """The rows ``idx_t``, ``idx_b`` of the update's batch ``b`` that :func:`loss_grads` reads."""
    keys = ("obs", "alive", "action_mask", "action", "logp", "adv", "value", "ret") + \
        (("logp_prox",) if decoupled else ())
    mb = {f"{g.name}/{k}": b[f"{g.name}/{k}"][idx_t, idx_b] for g in spec.groups for k in keys}
    if centralized:
        mb["critic_in"] = joint_input(spec, {g.name: mb[f"{g.name}/obs"] for g in spec.groups},
                                      b["state"][idx_t, idx_b] if spec.state_dim else None)
    return mb


@torch.no_grad()
def step(model: ActorCritic, cfg, b: Dict[str, torch.Tensor], idx_t: torch.Tensor, idx_b: torch.Tensor,
         max_norm: float = 0.0, adam=None):
    """One gradient step's gradients (dict by parameter) and statistics on the rows ``idx_t``, ``idx_b`` of ``b``;
    with ``max_norm`` > 0 the gradients are clipped to that global L2 norm here (one learner: nothing to average
    first; as ``torch.nn.utils.clip_grad_norm_``), the norm before clipping in ``stats["grad_norm"]``; with ``adam``
    (:func:`adam_args`) the parameters take Adam's step here too (as ``torch.optim.Adam``, on its state). What
    ``learner.compile`` compiles: gathers, step, clipping and Adam in one program."""
    grads, stats = loss_grads(model, cfg, minibatch(model.spec, model.centralized, cfg.decoupled_clip, b, idx_t,
                                                    idx_b))
    if max_norm > 0:
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads.values()]))
        scale = (max_norm / (norm + 1e-6)).clamp(max=1.0)
        grads = {p: g * scale for p, g in grads.items()}
        stats["grad_norm"] = norm
    if adam is not None:
        lr, beta1, beta2, eps, params, states = adam
        for p, (m, v, t) in zip(params, states):  # torch's fused Adam (amsgrad, weight decay and maximize off)
            g = grads[p]
            t.add_(1.0)
            m.lerp_(g, 1.0 - beta1)
            v.mul_(beta2).addcmul_(g, g, value=1.0 - beta2)
            denom = (v.sqrt() / (1.0 - beta2 ** t).sqrt()).add_(eps)
            p.sub_(lr / (1.0 - beta1 ** t) * m / denom)
    return grads, stats


def adam_args(opt: torch.optim.Adam, params) -> tuple:
    """``(lr tensor, beta1, beta2, eps, params, [(exp_avg, exp_avg_sq, step) per parameter])`` of ``opt`` (one parameter
    group, its state created as ``torch.optim.Adam`` creates it) for :func:`step`: its tensors are ``opt``'s own, so
    checkpoints and an eager step later see what the compiled one did. The learning rate is a tensor: a new value
    (``algo.lr_anneal_steps``) does not recompile."""
    group = opt.param_groups[0]
    beta1, beta2 = group["betas"]
    params, states = list(params), []
    for p in params:
        st = opt.state[p]
        if not st:
            st["step"] = torch.tensor(0.0, dtype=torch.float32, device=p.device)
            st["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            st["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        states.append((st["exp_avg"], st["exp_avg_sq"], st["step"]))
    return (torch.tensor(float(group["lr"]), device=params[0].device), beta1, beta2, group["eps"], params, states)
