"""Policy and critic networks (plain torch, no MPI).

One :class:`GroupPolicy` per policy group (parameters shared by the group's agents): categorical for
discrete actions (unavailable actions masked), diagonal Gaussian for continuous ones.  Critics: by default every
group has a value net on the agent's own observation (IPPO); an algorithm registered with ``centralized_critic``
(MAPPO) gets a centralized value net per group on the global state (or all agents' observations concatenated) with
one output per agent. Also the parameters as one flat vector (what actors receive) and a model's parameters and
optimiser state as plain arrays for checkpoints (no pickle).
"""
from __future__ import annotations

from typing import Dict, List, Optional

import numpy as np
import torch
from torch import nn

from hpcmarl.envs import EnvSpec, GroupSpec


class Tanh(nn.Module):
    """tanh as ``2 sigmoid(2x) - 1``: torch's CPU ``tanh`` is not vectorised (0.20 ms for 1,536 x 64 on the 2-core
    VM, against 0.06 ms this way); the two agree to float rounding (docs/development/benchmarks.md#cpu-kernels)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(2.0 * x).mul(2.0).sub(1.0)


ACTIVATIONS = {"tanh": Tanh, "relu": nn.ReLU}  # the hidden layers' nonlinearity (``algo.activation``)


class Categorical:
    """A categorical distribution over the last axis from (masked) logits, with log-softmax written out: torch's
    CPU ``softmax``/``log_softmax`` over a handful of actions costs 3-4x these few vectorised ops."""

    def __init__(self, logits: torch.Tensor):
        z = logits - logits.detach().amax(-1, keepdim=True)
        self.logp_all = z - z.exp().sum(-1, keepdim=True).log()

    @property
    def logits(self) -> torch.Tensor:
        """The normalised logits (log-probabilities), as ``torch.distributions.Categorical.logits``."""
        return self.logp_all

    @property
    def probs(self) -> torch.Tensor:
        return self.logp_all.exp()

    def log_prob(self, action: torch.Tensor) -> torch.Tensor:
        return self.logp_all.gather(-1, action.long().unsqueeze(-1)).squeeze(-1)

    def entropy(self) -> torch.Tensor:
        return -(self.probs * self.logp_all).sum(-1)


def sample_rows(logp: torch.Tensor) -> torch.Tensor:
    """``[N, 1]``: one action per row of log-probabilities ``[N, A]``, drawn by inverse CDF from one uniform number
    per row (``torch.multinomial`` costs 5x this on the CPU for a handful of actions: 0.25 against 0.05 ms for
    1,536 rows of 5): the first action whose cumulative probability reaches ``u`` in (0, the row's total]. That is
    never an action of probability 0 (masked), whatever the rounding: ``u > 0``, and ``u`` cannot pass the total."""
    cdf = logp.exp().cumsum(1)
    u = (1.0 - torch.rand(logp.shape[0], 1, dtype=cdf.dtype)) * cdf[:, -1:]
    return (cdf < u).sum(1, keepdim=True)


def mlp(inp: int, hidden: int, layers: int, out: int, out_gain: float = 1.0, act=Tanh) -> nn.Sequential:
    mods: List[nn.Module] = []
    d = inp
    for _ in range(layers):
        lin = nn.Linear(d, hidden)
        nn.init.orthogonal_(lin.weight, np.sqrt(2))
        nn.init.zeros_(lin.bias)
        mods += [lin, act()]
        d = hidden
    head = nn.Linear(d, out)
    nn.init.orthogonal_(head.weight, out_gain)
    nn.init.zeros_(head.bias)
    mods.append(head)
    return nn.Sequential(*mods)


class Board(nn.Module):
    """Two 3x3 convolutions (32 channels, ReLU, same padding) over a channels-last image observation flattened to
    ``[..., H*W*C]`` (e.g. Connect Four's 6x7x2 board); output ``[..., channels*H*W]``."""

    def __init__(self, shape, channels: int = 32):
        super().__init__()
        if len(shape) != 3:
            raise ValueError(f"algo.encoder=conv needs image observations (height, width, channels), got shape {shape}")
        self.shape = tuple(int(x) for x in shape)
        h, w, c = self.shape
        self.conv = nn.Sequential(nn.Conv2d(c, channels, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU())
        self.out_dim = channels * h * w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        y = self.conv(x.reshape(-1, *self.shape).permute(0, 3, 1, 2))
        return y.reshape(*lead, self.out_dim)


class AgentId(nn.Module):
    """Appends each agent's one-hot index on the group's agent axis to its observation (``[..., n, d]`` ->
    ``[..., n, d + n]``), so that agents sharing one network can act differently (EPyMARL's ``obs_agent_id``)."""

    def __init__(self, n: int):
        super().__init__()
        self.register_buffer("eye", torch.eye(n), persistent=False)  # not a parameter: weights keep their layout

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.cat([obs, self.eye.expand(*obs.shape[:-1], self.eye.shape[1])], dim=-1)


def encoder_mlp(g: GroupSpec, hidden: int, layers: int, out: int, out_gain: float = 1.0,
                encoder: str = "mlp", agent_id: bool = False, act=Tanh, act_after_head: bool = False) -> nn.Module:
    """The network of one group on its own observations: an MLP (``act`` after each hidden layer, and after the head
    too with ``act_after_head``: the GRU policy's body), or :class:`Board` convolutions then a ReLU MLP;
    ``agent_id``: the MLP reads :class:`AgentId`'s input."""
    if encoder == "conv":
        if agent_id:
            raise ValueError("algo.agent_id works with algo.encoder=mlp only")
        board = Board(g.obs_shape)
        return nn.Sequential(board, mlp(board.out_dim, hidden, layers, out, out_gain, act=nn.ReLU))
    mods = [AgentId(g.n)] if agent_id else []
    mods.append(mlp(g.obs_dim + (g.n if agent_id else 0), hidden, layers, out, out_gain, act=act))
    if act_after_head:
        mods.append(act())
    return mods[0] if len(mods) == 1 else nn.Sequential(*mods)


def softplus_std(x: torch.Tensor) -> torch.Tensor:
    """A standard deviation from an unconstrained ``x``: ``softplus(x) + 1e-4`` (never 0)."""
    return nn.functional.softplus(x) + 1e-4


def inverse_softplus(y: float) -> float:
    """The ``x`` with ``softplus(x) = y``."""
    return float(np.log(np.expm1(y)))


class GroupPolicy(nn.Module):
    """Categorical (masked) or diagonal Gaussian policy of one group.

    Continuous std: ``"log"`` = a free log-std parameter (PPO), starting at ``log_std_init``; ``"softplus"`` =
    ``softplus(raw)``, starting at ``init_std``, which stays valid at NIGT's extrapolated query points far from the
    current parameters; ``"state"`` = an output of the network (the head gives mean and std: ``softplus(x + b)``,
    ``b`` set so that ``x = 0`` gives ``exp(log_std_init)``; BenchMARL's MAPPO). Samples are the pre-squash ``u``;
    :func:`squash` maps them into the action box for the environment where the :class:`Inference` squashes (else
    the env clips them). ``activation``: a key of :data:`ACTIVATIONS`, after every hidden layer.
    """

    def __init__(self, g: GroupSpec, hidden: int, layers: int, std: str = "log", init_std: float = 0.6,
                 learn_std: bool = True, encoder: str = "mlp", recurrent: bool = False, agent_id: bool = False,
                 log_std_init: float = -0.5, activation: str = "tanh"):
        super().__init__()
        act = ACTIVATIONS[activation]
        self.discrete = g.discrete
        if std not in ("log", "softplus", "state"):
            raise ValueError(f"std must be log, softplus or state, not {std!r}")
        self.state_std = std == "state" and not g.discrete
        out = g.n_actions if g.discrete else g.act_dim * (2 if self.state_std else 1)
        self.recurrent = recurrent
        if recurrent:  # rMAPPO's actor: MLP features -> GRU cell -> head; the hidden state is the caller's
            if encoder != "mlp":
                raise ValueError("algo.recurrent works with algo.encoder=mlp only")
            self.body = encoder_mlp(g, hidden, layers - 1, hidden, agent_id=agent_id, act=act, act_after_head=True)
            self.rnn = nn.GRUCell(hidden, hidden)
            self.head = nn.Linear(hidden, out)
            nn.init.orthogonal_(self.head.weight, 0.01)
            nn.init.zeros_(self.head.bias)
            self.net = self._recurrent_net_missing
        else:
            self.net = encoder_mlp(g, hidden, layers, out, 0.01, encoder, agent_id, act)
        self.hidden_size = hidden if recurrent else 0
        self.softplus_std = std == "softplus"
        if self.state_std:  # x = 0 (the head's initial output, about) gives the std exp(log_std_init)
            self.std_bias = inverse_softplus(np.exp(log_std_init))
        elif not g.discrete:
            if self.softplus_std:  # inverse softplus of init_std; a buffer (not trained) unless learn_std
                raw = torch.full((g.act_dim,), inverse_softplus(init_std))
                if learn_std:
                    self.std_raw = nn.Parameter(raw)
                else:
                    self.register_buffer("std_raw", raw)
            else:
                self.log_std = nn.Parameter(torch.full((g.act_dim,), float(log_std_init)))

    @staticmethod
    def _recurrent_net_missing(obs):
        raise TypeError("a recurrent policy needs its hidden state: use GroupPolicy.step(obs, h)")

    def std(self) -> torch.Tensor:
        return softplus_std(self.std_raw) if self.softplus_std else self.log_std.exp()

    def step(self, obs: torch.Tensor, h: torch.Tensor):
        """Recurrent policies: ``obs [..., d]``, hidden ``h [..., H]`` -> (action head output, next hidden)."""
        x = self.body(obs)
        lead = x.shape[:-1]
        h2 = self.rnn(x.reshape(-1, x.shape[-1]), h.reshape(-1, h.shape[-1])).reshape(*lead, -1)
        return self.head(h2), h2

    def dist(self, obs: torch.Tensor, mask: torch.Tensor = None, out: torch.Tensor = None):
        """The action distribution on ``obs`` (or on a head output ``out`` computed by :meth:`step`)."""
        out = self.net(obs) if out is None else out
        if self.discrete:
            if mask is not None:
                out = out.masked_fill(~mask, -1e9)
            return Categorical(out)
        if self.state_std:
            loc, x = out.chunk(2, dim=-1)
            return torch.distributions.Independent(
                torch.distributions.Normal(loc, softplus_std(x + self.std_bias)), 1)
        return torch.distributions.Independent(torch.distributions.Normal(out, self.std().expand_as(out)), 1)


def joint_input(spec: EnvSpec, obs: Dict[str, torch.Tensor], state: torch.Tensor = None) -> torch.Tensor:
    """Centralized input ``[..., D]``: the env state where the spec has one, else every group's obs
    ``[..., n_g, d_g]`` concatenated."""
    if spec.state_dim:
        return state
    return torch.cat([obs[g.name].flatten(-2) for g in spec.groups], dim=-1)


def squash(g: GroupSpec, u: np.ndarray) -> np.ndarray:
    """tanh-squash pre-squash samples ``u`` into the group's action box ``[low, high]``."""
    return g.act_low + (np.tanh(u) + 1.0) * 0.5 * (g.act_high - g.act_low)


class RecurrentCritic(nn.Module):
    """A centralized critic with a GRU (``algo.critic_recurrent``, as JaxMARL's MAPPO): MLP features of the joint
    input -> GRU cell -> one value per agent; the hidden state ``[..., H]`` is the caller's."""

    def __init__(self, inp: int, hidden: int, layers: int, n: int, act=Tanh):
        super().__init__()
        self.body = nn.Sequential(mlp(inp, hidden, layers - 1, hidden, act=act), act())
        self.rnn = nn.GRUCell(hidden, hidden)
        self.head = nn.Linear(hidden, n)
        nn.init.orthogonal_(self.head.weight, 1.0)
        nn.init.zeros_(self.head.bias)
        self.hidden_size = hidden

    def step(self, x: torch.Tensor, h: torch.Tensor):
        """``x [..., D]``, ``h [..., H]`` -> (values ``[..., n]``, next hidden)."""
        f = self.body(x)
        lead = f.shape[:-1]
        h2 = self.rnn(f.reshape(-1, f.shape[-1]), h.reshape(-1, h.shape[-1])).reshape(*lead, -1)
        return self.head(h2), h2


class ActorCritic(nn.Module):
    """Group policies and critics; ``centralized``: the critics read the joint input (:func:`joint_input`), as the
    registry entry's ``centralized_critic`` asks (:class:`hpcmarl.algos.base.Algorithm`)."""

    def __init__(self, spec: EnvSpec, centralized: bool, hidden: int = 64, layers: int = 2, encoder: str = "mlp",
                 recurrent: bool = False, agent_id: bool = False, log_std_init: float = -0.5,
                 activation: str = "tanh", critic_recurrent: bool = False, std: str = "log"):
        super().__init__()
        self.spec = spec
        self.centralized = bool(centralized)
        self.critic_recurrent = bool(critic_recurrent)  # the critics are RecurrentCritic (centralized only)
        self.policies = nn.ModuleDict({g.name: GroupPolicy(g, hidden, layers, std, encoder=encoder, recurrent=recurrent,
                                                           agent_id=agent_id, log_std_init=log_std_init,
                                                           activation=activation)
                                       for g in spec.groups})
        self.critic_in = (spec.state_dim or spec.joint_obs_dim) if self.centralized else None
        act = ACTIVATIONS[activation]
        self.critics = nn.ModuleDict({  # a centralized critic has one output per agent: it needs no agent ids
            g.name: RecurrentCritic(self.critic_in, hidden, layers, g.n, act) if self.critic_recurrent
            else mlp(self.critic_in, hidden, layers, g.n, act=act) if self.centralized
            else encoder_mlp(g, hidden, layers, 1, 1.0, encoder, agent_id, act)
            for g in spec.groups})

    def policy_parameters(self) -> List[nn.Parameter]:
        return list(self.policies.parameters())

    def values(self, obs: Dict[str, torch.Tensor], state: torch.Tensor = None) -> Dict[str, torch.Tensor]:
        """Per-group values ``[..., n_g]`` (feed-forward critics; recurrent ones step through
        :mod:`hpcmarl.algos.ppo_recurrent`)."""
        if self.critic_recurrent:
            raise TypeError("a recurrent critic needs its hidden state: use RecurrentCritic.step(x, h)")
        if self.centralized:
            x = joint_input(self.spec, obs, state)
            return {g.name: self.critics[g.name](x) for g in self.spec.groups}
        return {g.name: self.critics[g.name](obs[g.name]).squeeze(-1) for g in self.spec.groups}


def flat_params(params) -> np.ndarray:
    return torch.cat([p.detach().reshape(-1).cpu() for p in params]).numpy().astype(np.float32)


def assign_flat(params, flat: np.ndarray) -> None:
    off = 0
    with torch.no_grad():
        for p in params:
            n = p.numel()
            p.copy_(torch.from_numpy(flat[off:off + n]).view_as(p))
            off += n
    assert off == flat.size, f"parameter vector has {flat.size} values, model needs {off}"


def param_count(params) -> int:
    return sum(p.numel() for p in params)


def torch_state_arrays(model: torch.nn.Module, opt: torch.optim.Optimizer) -> Dict[str, np.ndarray]:
    """Module parameters/buffers and optimizer state as plain arrays (no pickle)."""
    out = {f"model/{k}": v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}
    for pid, s in opt.state_dict()["state"].items():
        for k, v in s.items():
            out[f"optim/{pid}/{k}"] = v.detach().cpu().numpy().copy() if torch.is_tensor(v) else np.array(v)
    return out


def load_torch_state_arrays(model: torch.nn.Module, opt: torch.optim.Optimizer, arrays: Dict[str, np.ndarray],
                            device) -> None:
    sd = {k[len("model/"):]: torch.from_numpy(np.array(v)) for k, v in arrays.items() if k.startswith("model/")}
    model.load_state_dict(sd)
    st = opt.state_dict()
    state = {}
    for k, v in arrays.items():
        if k.startswith("optim/"):
            _, pid, name = k.split("/", 2)
            state.setdefault(int(pid), {})[name] = torch.from_numpy(np.array(v)).to(device if name != "step" else "cpu")
    st["state"] = state
    opt.load_state_dict(st)


def checksum(flat: np.ndarray) -> float:
    """Order-sensitive float64 checksum of a parameter vector (actors report it back to learners)."""
    w = np.arange(1, flat.size + 1, dtype=np.float64) % 97 + 1.0
    return float(np.dot(flat.astype(np.float64), w))


class Inference:
    """Actor-side action selection with the policy networks only (numpy in, numpy out)."""

    def __init__(self, spec: EnvSpec, hidden: int, layers: int, std: str = "log", init_std: float = 0.6,
                 learn_std: bool = True, encoder: str = "mlp", recurrent: bool = False, agent_id: bool = False,
                 activation: str = "tanh", log_std_init: float = -0.5, squash: bool = False):
        self.spec = spec
        self.policies = nn.ModuleDict({g.name: GroupPolicy(g, hidden, layers, std, init_std, learn_std, encoder,
                                                           recurrent, agent_id, log_std_init, activation)
                                       for g in spec.groups})
        self.recurrent = recurrent
        self.h: Dict[str, torch.Tensor] = {}  # recurrent: hidden state per group [E, n, H], carried across unrolls
        self.params = list(self.policies.parameters())
        self.squashed = squash or std == "softplus"  # tanh-squashed continuous actions (NIGT's; else clipped)
        self.epsilon = 0.0  # exploration of value-based policies (QInference); set from each weights message
        self.greedy = False  # league snapshots of best responses (league.groups.N.snapshot_greedy) play greedily
        self.version = -1
        self.checksum = 0.0

    def load(self, flat: np.ndarray, version: int) -> None:
        assign_flat(self.params, flat)
        self.version = version
        self.checksum = checksum(flat)

    def to_env(self, actions: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """Actions as the environment takes them (tanh-squashed into the action box where :attr:`squashed`)."""
        if not self.squashed:
            return actions
        return {g.name: actions[g.name] if g.discrete else squash(g, actions[g.name]) for g in self.spec.groups}

    def hidden(self, group: str, lead: tuple) -> torch.Tensor:
        """Recurrent: the group's hidden state for observations of leading shape ``lead`` (zeros when new)."""
        h = self.h.get(group)
        if h is None or tuple(h.shape[:-1]) != tuple(lead):
            h = self.h[group] = torch.zeros(*lead, self.policies[group].hidden_size)
        return h

    def episodes_ended(self, envs) -> None:
        """Env copies ``envs`` start new episodes: their hidden states restart from zero."""
        if self.recurrent and len(envs):
            for h in self.h.values():
                h[list(envs)] = 0.0

    @staticmethod
    def carry(state: Dict[str, torch.Tensor], group: str, new: torch.Tensor, rows: Optional[slice]) -> None:
        """Store a recurrent policy's state for the next step (``state[group]``, e.g. :attr:`h`; with ``rows``, those
        rows of the state of all env copies that :meth:`hidden` made)."""
        if rows is None:
            state[group] = new
        else:
            state[group][rows] = new

    @torch.no_grad()
    def act(self, obs: Dict[str, np.ndarray], masks: Dict[str, np.ndarray], greedy: bool = False,
            rows: Optional[slice] = None):
        """Sample (or with ``greedy`` take the most likely) actions; returns (actions, log-probs). Recurrent
        policies advance their hidden state (:meth:`episodes_ended` resets it); ``rows``: the observations are those
        env copies' of all (the Sampler's parts), whose hidden state :meth:`hidden` made."""
        actions, logps = {}, {}
        for g in self.spec.groups:
            o = torch.from_numpy(obs[g.name])
            pol = self.policies[g.name]
            out = None
            if self.recurrent:
                out, h = pol.step(o, self.hidden(g.name, o.shape[:-1]) if rows is None else self.h[g.name][rows])
                self.carry(self.h, g.name, h, rows)
            if g.discrete:  # hot path: no Distribution object (its argument checks cost more than the net)
                logits = (pol.net(o) if out is None else out).masked_fill(~torch.from_numpy(masks[g.name]), -1e9)
                logp_all = Categorical(logits).logp_all
                flat = logp_all.reshape(-1, logp_all.shape[-1])
                a = flat.argmax(1, keepdim=True) if greedy else sample_rows(flat)
                actions[g.name] = a.reshape(logp_all.shape[:-1]).numpy()
                logps[g.name] = flat.gather(1, a).reshape(logp_all.shape[:-1]).numpy()
            else:
                d = pol.dist(o, out=out)
                a = d.base_dist.mean if greedy else d.sample()
                actions[g.name] = a.numpy()
                logps[g.name] = d.log_prob(a).numpy()
        return actions, logps


def policy_inference(spec: EnvSpec, algo) -> Inference:
    """Policy networks of ``algo.hidden`` x ``algo.layers`` (``algo.encoder`` if it has one; a GRU policy with
    ``algo.recurrent``; agent ids in the input with ``algo.agent_id``; ``algo.activation``; Gaussian heads as
    ``algo.state_std``, ``algo.squash_actions`` and ``algo.log_std_init`` say): PPO, MA-Trace."""
    return Inference(spec, algo.hidden, algo.layers, "state" if getattr(algo, "state_std", False) else "log",
                     encoder=getattr(algo, "encoder", "mlp"), recurrent=bool(getattr(algo, "recurrent", False)),
                     agent_id=bool(getattr(algo, "agent_id", False)), activation=getattr(algo, "activation", "tanh"),
                     log_std_init=float(getattr(algo, "log_std_init", -0.5)),
                     squash=bool(getattr(algo, "squash_actions", False)))


def squashed_inference(spec: EnvSpec, algo) -> Inference:
    """NIGT: softplus standard deviation, tanh-squashed continuous actions."""
    return Inference(spec, algo.hidden, algo.layers, std="softplus", init_std=algo.init_std, learn_std=algo.learn_std)
