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
  every ``push_every`` updates, two sends in flight per actor). The gradient flow (NIGT) and league mode are not
  modelled.
"""
from hpcmarl.sizing.flows import Prediction, predict, ring_allreduce_s
from hpcmarl.sizing.kernel import Barrier, Link, Mailbox, Node, Sim, Slots
from hpcmarl.sizing.profile import ASYNC, SYNC, Machine, Profile, busy_slowdown, measure, wait_load

__all__ = ["ASYNC", "SYNC", "Barrier", "Link", "Machine", "Mailbox", "Node", "Prediction", "Profile", "Sim", "Slots",
           "busy_slowdown", "measure", "predict", "ring_allreduce_s", "wait_load"]
