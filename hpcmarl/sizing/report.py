"""``hpcmarl validate CONFIG --np N --predict`` / ``--save-profile``: a node profile (measured here or read from a
file) played on the job's layout, printed."""
import os

from hpcmarl.sizing.flows import predict
from hpcmarl.sizing.kernel import Machine
from hpcmarl.sizing.profile import GRADIENTS, Profile, measure


def validate_predict(cfg, layout, args) -> int:
    """``validate --predict``: measure this node's costs (or read a saved profile) and simulate the layout."""
    from hpcmarl.algos import base as algos

    if layout.league:
        raise ValueError("--predict does not model league mode")
    flow = algos.get(cfg.algo.name).data_flow()
    if flow.sizing is None:  # said before measuring (or reading a profile), not after
        raise ValueError(f"the {flow.name} flow is not modelled (its registration names no sizing model)")
    if args.profile:
        try:
            prof = Profile.load(args.profile)
        except OSError as e:
            raise ValueError(f"cannot read the node profile {args.profile}: {e}") from None
        print(f"node profile {args.profile} (measured on {prof.host} at {prof.measured_at})")
        prof = prof.for_config(cfg)  # the config's injected costs and env copies, not the profiled config's
    else:
        print("measuring this node (one actor and one learner in this process, a few seconds) ...", flush=True)
        prof = measure(cfg, progress=lambda s: print(f"  {s}", flush=True))
    if args.save_profile:
        prof.save(args.save_profile)
        print(f"node profile saved to {args.save_profile}")
    if prof.flow == GRADIENTS:
        print(f"  one batch of {prof.num_envs} trajectories ({prof.steps_per_unroll} env steps): "
              f"{prof.collect_s * 1e3:.1f} ms, their gradients {prof.grad_s * 1e3:.1f} ms; NIGT step "
              f"{prof.update_fixed_s * 1e3:.2f} ms; {prof.aggregation}, M={prof.batch}; gradient "
              f"{prof.grad_bytes / 1e6:.3f} MB")
    else:
        print(f"  one unroll ({prof.steps_per_unroll} env steps): {prof.collect_s * 1e3:.1f} ms "
              f"(env {prof.env_s * 1e3:.1f}, inference {prof.infer_s * 1e3:.1f}); learner update "
              f"{prof.update_fixed_s * 1e3:.1f} + {prof.update_per_unroll_s * 1e3:.1f} ms per unroll, "
              f"{prof.grad_steps} gradient steps; unroll {prof.unroll_bytes / 1e6:.2f} MB, weights "
              f"{prof.weight_bytes / 1e6:.3f} MB")
    if not args.predict:
        return 0
    if layout.serial and prof.flow == GRADIENTS:
        sps = prof.steps_per_unroll / (prof.collect_s + prof.grad_s + prof.actor_sleep_s(0, 1))
        print(f"predicted: {sps:,.0f} env steps/s (serial: one rank collects and computes the gradients)")
        return 0
    if layout.serial:
        sps = prof.steps_per_unroll / (prof.collect_s + prof.update_s(1) + prof.overhead_s + prof.actor_sleep_s(0, 1)
                                       + prof.update_delay_s)
        print(f"predicted: {sps:,.0f} env steps/s (serial: one rank collects and updates in turn)")
        return 0
    cores = args.cores_per_node or os.cpu_count() or 1
    m = Machine(cores_per_node=cores, ranks_per_node=args.ranks_per_node, net_bw=args.net_gbps * 1e9 / 8,
                net_latency_s=args.net_latency_us * 1e-6, placement=args.distribution)
    r = predict(prof, m, layout.actors, layout.learners)
    print(f"model: {r.nodes} node(s) x {cores} cores, {args.ranks_per_node or layout.world_size} ranks per node "
          f"({args.distribution}), network {args.net_gbps:g} Gb/s {args.net_latency_us:g} us")
    print(r.describe())
    return 0
