"""QMIX / VDN value decomposition with the MAST components (docs/algorithms/qmix.md). Pure torch, no MPI.

Actors act epsilon-greedily with per-agent utility networks Q_i(o_i, id_i, .) (parameters shared inside a
policy group, the agent's one-hot index appended to its observation) and send T-step unrolls as in the
rollout flow; the learner stitches them back into whole episodes per env copy
(:class:`hpcmarl.algos.offpolicy.EpisodeStitcher`), keeps them in an episode replay
(:class:`hpcmarl.algos.offpolicy.EpisodeReplay`) and trains on batches of episodes:

    Q_tot(s_t, a_t) = mixer([Q_i(o_t^i, a_t^i)]_i, s_t)         (VDN: the sum; QMIX: monotonic hypernet mixer)
    b_{t+1}^i       = SM_{omega,alpha}(Q_i^target(o_{t+1}^i, .))  over available actions (mellowmax_omega > 0)
                    = Q_i^target(o_{t+1}^i, argmax_a Q_i(o_{t+1}^i, a))   otherwise (double Q)
    boot_t          = mixer^target(b_{t+1}, s_{t+1})
    G_t             = r_t + gamma (1 - term_t) [(1 - lambda) boot_t + lambda G_{t+1}]
    loss            = mean over valid steps of (Q_tot(s_t, a_t) - stopgrad(G_t))^2

r_t is the team reward (every agent's reward summed). lambda = 0 gives one-step targets; MAST's hybrid
schedule uses 0 until ``td_lambda_after`` env steps and ``td_lambda`` afterwards. With ``bootstrap_truncated`` (off by
default here) an episode ended by a time limit bootstraps from its final observation. ``recurrent``: PyMARL's RNN agent
(:class:`RNNAgent`), run through whole episodes from a zero state.

MAST (sparsity > 0): the whole network (agent nets and mixer) is sparse with Erdos-Renyi layer
densities, RigL topology updates every ``topology_every`` gradient steps until ``topology_end``, masks
applied after every step, to Adam's moments, to the target network and on checkpoint load
(:mod:`hpcmarl.algos.sparse`). The dual replay draws ``recent_fraction`` of every batch from the
``recent_episodes`` newest episodes.

Submodules: :mod:`~hpcmarl.algos.qmix.config` (the ``algo.*`` keys), :mod:`~hpcmarl.algos.qmix.networks`,
:mod:`~hpcmarl.algos.qmix.acting` (actor-side inference), :mod:`~hpcmarl.algos.qmix.learning` (targets and the
learner); episode stitching and replay live in :mod:`hpcmarl.algos.offpolicy`.
"""
from hpcmarl.algos.qmix.acting import QInference, q_inference
from hpcmarl.algos.qmix.config import QMIXConfig
from hpcmarl.algos.qmix.learning import QMIXLearner, lambda_returns, soft_mellowmax
from hpcmarl.algos.qmix.networks import (
    QMixer,
    QNet,
    RNNAgent,
    agent_input,
    agent_nets,
    one_hot,
    pack_masks,
    rnn_input,
    sparse_layout,
)

__all__ = ["QInference", "QMIXConfig", "QMIXLearner", "QMixer", "QNet", "RNNAgent", "agent_input", "agent_nets",
           "lambda_returns", "one_hot", "pack_masks", "q_inference", "rnn_input", "soft_mellowmax", "sparse_layout"]
