"""A sizing model for jobs larger than one node (``hpcmarl validate CONFIG --np N --predict``,
``tools/scale_model.py``).

From costs measured on the user's own node (:func:`measure`: one process, one core, no MPI, a few seconds), a small
discrete-event simulation (:func:`predict`) plays the job's layout -- A actors, L learners, ranks placed on nodes in
blocks as Slurm does by default -- and reports env steps/s, each learner's ingress load, the policy lag and the
bottleneck.

What the model assumes (and so what it leaves out):

- **CPU**: the ranks that compute on one node share its cores equally (processor sharing: k busy ranks on c cores
  each run at min(1, c/k) of full speed); a rank that waits for a message uses no CPU (hpcmarl's waits poll with
  sleeps, up to 1 ms late: ``Machine.poll_s``).
- **Messages** take ``latency + bytes / bandwidth``: shared memory within a node, the network across nodes. A learner
  receives its actors' unrolls one after the other (its ingress is one serial link); weights go out to every actor
  at once. Network contention between learners, NIC sharing and switch topology are not modelled.
- **All-reduce** (learners of one group, ``grad_steps`` per update, each a barrier): ring all-reduce,
  ``2 (L-1) (latency + bytes / (L bandwidth)) + allreduce_call_s`` per call.
- **Flows**: synchronous rollouts (MAPPO/IPPO/QMIX/VDN/MAST; ``actors.overlap`` lets an actor run one version
  ahead) and asynchronous rollouts (MA-Trace: a bounded queue per learner, ``batch_unrolls`` per update, weights
  every ``push_every`` updates, two sends in flight per actor) and the gradient flow (NIGT: batches of whole
  trajectories abandoned by a new round's query point, the round's closing rule, learner 0's counters reached by a
  round trip; :mod:`hpcmarl.sizing.gradients`). League mode is not modelled.
- **Injected costs** (``actors.step_delay_s`` x ``actors.delay``'s h_i after every env step, ``learner.update_delay_s``
  per update) are sleeps: they take time and no CPU. The profile holds the real costs and adds them exactly, so a run
  whose costs are mostly injected is predicted independently of this machine's speed (``tools/scale_model.py
  --injected``).
- **Batched envs**: the cost of one step of E env copies (collect, env, inference) is measured at a few E
  (``measure(cfg, envs=...)``) and interpolated piecewise linearly (``Profile.at_envs``; ``predict(num_envs=E)``);
  the learner's per-unroll cost and the unroll's size scale in proportion to E.
"""
from hpcmarl.sizing.flows import predict
from hpcmarl.sizing.gradients import predict_gradients
from hpcmarl.sizing.kernel import Barrier, Link, Machine, Mailbox, Node, Prediction, Sim, Slots, ring_allreduce_s
from hpcmarl.sizing.profile import ASYNC, GRADIENTS, SYNC, Profile, busy_slowdown, measure, step_costs, wait_load

__all__ = ["ASYNC", "GRADIENTS", "SYNC", "Barrier", "Link", "Machine", "Mailbox", "Node", "Prediction", "Profile",
           "Sim", "Slots", "busy_slowdown", "measure", "predict", "predict_gradients", "ring_allreduce_s",
           "step_costs", "wait_load"]
