"""MPI role shells: each owns a loop, its communicators, tags and waits; compute lives in algos/envs/sampler."""
