"""Communication: fixed-shape message specs, the actor<->learner protocol, learner collectives (Horovod or MPI)."""
