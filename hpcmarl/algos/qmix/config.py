"""QMIX / VDN: the ``algo.*`` keys (:class:`QMIXConfig`) and their validation."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from hpcmarl.typedconfig import check


@dataclass
class QMIXConfig:
    """QMIX / VDN on the rollout flow, with the MAST sparse-training components (docs/algorithms/qmix.md).

    MAST values the paper does not give (alpha, lambda, the switch step, buffer sizes and split) are
    our choices (docs/algorithms/qmix.md#mast-values-the-paper-does-not-give); every component can be switched off
    for ablations."""

    name: Literal["qmix", "vdn"] = "qmix"  # qmix (monotonic hypernetwork mixer) | vdn (sum of utilities)
    unroll_length: int = 25  # T: steps per env copy in one unroll (MPE: one whole episode)
    episode_limit: int = 0  # longest stored episode segment; 0 = the env's max_cycles
    lr: float = 5e-4  # Adam learning rate
    gamma: float = 0.99  # discount factor
    reward_scale: float = 1.0  # team reward multiplier for learning (returns are logged unscaled)
    reward_norm: bool = False  # standardise team rewards with running mean/std (over all learners' episodes)
    reward_center: bool = True  # reward_norm also subtracts the running mean (EPyMARL's standardise_rewards); false:
    # divide by the std only. Where episodes end at different times, the mean (SMAX: > 0) makes every step cost and
    # pays agents to end the episode, by losing fast (docs/algorithms/qmix.md#pitfalls)
    hidden: int = 64  # units per hidden layer of the agent utility network
    layers: int = 2  # hidden layers of the agent utility MLP
    mixer_embed: int = 32  # QMIX: width of the mixing network's hidden layer
    hyper_hidden: int = 64  # QMIX: hidden units of the hypernetworks that make the mixer's weights
    eps_start: float = 1.0  # epsilon-greedy exploration, annealed linearly over eps_anneal_steps env steps
    eps_end: float = 0.05  # final epsilon, kept after eps_anneal_steps
    eps_anneal_steps: int = 100_000  # env steps over which epsilon goes from eps_start to eps_end
    buffer_episodes: int = 5000  # replay capacity (episode segments, FIFO)
    batch_episodes: int = 32  # episode segments per gradient step (from each learner's replay)
    learning_starts: int = 32  # episodes in every learner's replay before training starts
    train_steps: int = 1  # gradient steps per learner update (one update = one unroll per actor)
    target_update: int = 200  # gradient steps between hard target-network copies (unless target_tau > 0)
    target_tau: float = 0.0  # > 0: soft target update theta' <- tau theta + (1 - tau) theta' after every step
    max_grad_norm: float = 10.0  # gradients are clipped to this global L2 norm

    # ---- MAST ----
    sparsity: float = 0.0  # fraction of zero weights in agent nets and mixer (Erdos-Renyi per layer); 0 = dense
    topology_every: int = 200  # gradient steps between RigL drop/grow updates (0 = static sparse masks)
    topology_end: int = 50_000  # no topology updates from this gradient step on (cosine schedule ends here)
    drop_fraction: float = 0.5  # zeta_0: initial fraction of active weights dropped and regrown
    mellowmax_omega: float = 0.0  # Soft Mellowmax bootstrap (omega > 0; 0 = double-Q max)
    mellowmax_alpha: float = 0.0  # alpha of Soft Mellowmax: [LSE((alpha + omega) q) - LSE(alpha q)] / omega
    td_lambda: float = 0.0  # lambda of the TD(lambda) targets (0 = one-step)
    td_lambda_after: int = 0  # hybrid targets: one-step until this many env steps, TD(lambda) afterwards
    recent_episodes: int = 0  # dual replay: size of the newest-episodes buffer (0 = single buffer)
    recent_fraction: float = 0.5  # share of every batch drawn from the newest episodes
    checkpoint_replay: bool = True  # checkpoints hold each learner's replay buffer (a resume continues with it)
    critic_input: Literal["obs", "state"] = "obs"  # mixer input: "obs" = all agents' observations concatenated; "state"
    # = env.state()
    bootstrap_truncated: bool = False  # true: an episode ended by a time limit bootstraps from its final observation
    # (the segment is not terminal). Off by default for value-based learners: on simple_spread (every episode ends by
    # its time limit) it left the Q-values without any anchor and they diverged (Q_tot 1,265 at 1M env steps on
    # standardised rewards, return falling from -65.7 at 250k to -75.3); cut there, Q stays ~11 and the return reaches
    # -54 by 800k (docs/algorithms/qmix.md#pitfalls)
    recurrent: bool = False  # PyMARL's RNN agent: input obs + last action (one-hot) + agent id, one ReLU layer of
    # `hidden`, a GRU cell, the Q head (`layers` unused); hidden state through whole episodes (MAST masks the GRU too)

    @property
    def uses_state(self) -> bool:
        return self.critic_input == "state"

    def validate(self, cfg) -> None:
        """Checks beyond the types (called by :func:`hpcmarl.config.validate`)."""
        for k in ("unroll_length", "hidden", "layers", "mixer_embed", "hyper_hidden", "buffer_episodes",
                  "batch_episodes", "train_steps", "target_update"):
            check(getattr(self, k) >= 1, f"algo.{k}", "must be >= 1")
        for k in ("episode_limit", "eps_anneal_steps", "learning_starts", "topology_every", "topology_end",
                  "td_lambda_after", "recent_episodes"):
            check(getattr(self, k) >= 0, f"algo.{k}", "must be >= 0")
        check(self.lr > 0, "algo.lr", "must be > 0")
        check(0 < self.gamma <= 1, "algo.gamma", "must be in (0, 1]")
        check(0 <= self.eps_end <= self.eps_start <= 1, "algo.eps_start", "need 0 <= eps_end <= eps_start <= 1")
        check(self.learning_starts <= self.buffer_episodes, "algo.learning_starts",
               f"must be <= algo.buffer_episodes ({self.buffer_episodes})")
        check(self.recent_episodes <= self.buffer_episodes, "algo.recent_episodes",
               f"must be <= algo.buffer_episodes ({self.buffer_episodes})")
        check(self.reward_norm or self.reward_center, "algo.reward_center",
              "false applies only with algo.reward_norm: true (rewards are neither centred nor scaled without it)")
        check(0 <= self.sparsity < 1, "algo.sparsity", "must be in [0, 1)")
        check(0 <= self.drop_fraction <= 1, "algo.drop_fraction", "must be in [0, 1]")
        check(self.mellowmax_omega >= 0, "algo.mellowmax_omega", "must be >= 0 (0 = max)")
        check(0 <= self.td_lambda <= 1, "algo.td_lambda", "must be in [0, 1]")
        check(0 <= self.recent_fraction <= 1, "algo.recent_fraction", "must be in [0, 1]")
        check(0 <= self.target_tau <= 1, "algo.target_tau",
              "must be in [0, 1] (0 = hard copies every target_update steps)")
        # algo.episode_limit >= 1: hpcmarl.config.validate asks it (the registry entry has needs_episode_limit=True)
