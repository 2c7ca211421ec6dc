"""The jitted step and reset of :class:`~hpcmarl.envs.jaxmarl.JaxMarlEnv` (``hpcmarl.envs.jaxmarl``'s docstring says
what they compute): one ``vmap(step_env)`` over a part's copies with the auto-reset of the ended ones, the per-group
stacking, rewards, terminations, final observations, NaN checks and the battle outcome inside the same call."""
from __future__ import annotations


def _teams_alive(state):
    """``([E] bool, [E] bool)``: a SMAX-like battle's allied (team 0, the trained one) and enemy (team 1) sides each
    have a unit alive (None: the env has no units)."""
    s = getattr(state, "state", state)
    if not (hasattr(s, "unit_alive") and hasattr(s, "unit_teams")):
        return None
    alive, team = s.unit_alive, s.unit_teams
    return (alive & (team == 0)).any(-1), (alive & (team == 1)).any(-1)


def compile_step(venv, E: int):
    """``(step_fn, reset_fn)``: the jitted functions of a :class:`~hpcmarl.envs.jaxmarl.JaxMarlEnv` over ``E`` copies
    (one part; see that module's docstring)."""
    jax, jnp = venv.jax, venv.jnp
    lax = jax.lax
    env, groups = venv.env, venv.spec.groups
    masked, with_state = venv._masked, venv.spec.state_dim > 0
    limit, scale = venv.max_steps, venv.reward_scale
    act_shape = {g.name: tuple(int(x) for x in env.action_space(g.agents[0]).shape) for g in groups if not g.discrete}
    keys_needed = [a for g in groups for a in g.agents] + (["world_state"] if with_state else [])

    def strong(tree):  # no weak types: the state fed back in keeps one signature (one compilation)
        return jax.tree.map(lambda x: lax.convert_element_type(x, x.dtype), tree)

    def stack(d, g, tail):  # {agent: [E, ...]} -> [E, n_g, *tail] in the group's agent order
        return jnp.stack([jnp.reshape(d[a], (E,) + tail) for a in g.agents], axis=1)

    def keys_of(seeds):
        return jax.vmap(jax.random.PRNGKey)(seeds)

    def observe(obs, state, alive) -> dict:
        out = {}
        avail = jax.vmap(env.get_avail_actions)(state) if masked else None
        for g, al in zip(groups, alive):
            out[f"{g.name}/obs"] = jnp.where(al[..., None], stack(obs, g, (g.obs_dim,)).astype(jnp.float32), 0.0)
            out[f"{g.name}/alive"] = al
            if masked and g.discrete:
                out[f"{g.name}/mask"] = jnp.where(al[..., None], stack(avail, g, (g.n_actions,)).astype(bool), True)
        if with_state:
            out["state"] = jnp.reshape(obs["world_state"], (E, -1)).astype(jnp.float32)
        return out

    @jax.jit
    def reset_fn(seeds):
        obs, state = jax.vmap(env.reset)(keys_of(seeds))
        out = observe(obs, state, tuple(jnp.ones((E, g.n), bool) for g in groups))
        out["seeds"], out["t"] = seeds, jnp.zeros(E, jnp.int32)
        return strong(state), out

    @jax.jit
    def step_fn(state, acts, alive, seeds, t, nxt):
        keys = jax.vmap(jax.random.fold_in)(keys_of(seeds), t)
        act = {}
        for g, a in zip(groups, acts):
            if not g.discrete:
                a = jnp.clip(a, g.act_low, g.act_high)
            for j, agent in enumerate(g.agents):
                act[agent] = a[:, j] if g.discrete else jnp.reshape(a[:, j], (E,) + act_shape[g.name])
        obs, st, rew, dones, _ = jax.vmap(env.step_env)(keys, state, act)
        obs = {k: obs[k] for k in keys_needed}
        length = t + 1
        ended = dones["__all__"].astype(bool)
        out = {}
        trunc_ep = ended & (length >= limit) if limit is not None else jnp.zeros(E, bool)
        teams = _teams_alive(st)
        if teams is not None:  # a side wiped out ends the battle (terminated, not truncated); won: SMAX's win bonus
            trunc_ep = trunc_ep & teams[0] & teams[1]
            out["won"] = (teams[0] & ~teams[1]).astype(jnp.float32)
        nexts, bad = [], jnp.zeros(E, bool)
        for g, al in zip(groups, alive):
            o = stack(obs, g, (g.obs_dim,)).astype(jnp.float32)
            r = jnp.where(al, stack(rew, g, ()).astype(jnp.float32), 0.0)
            dead = stack(dones, g, ()).astype(bool)
            bad = bad | jnp.isnan(o).any((1, 2)) | jnp.isnan(r).any(1)
            tr = al & trunc_ep[:, None]
            out[f"{g.name}/reward"] = r * scale
            out[f"{g.name}/terminated"] = al & jnp.where(ended[:, None], ~trunc_ep[:, None], dead)
            out[f"{g.name}/truncated"] = tr
            out[f"{g.name}/final_obs"] = jnp.where(tr[..., None], o, 0.0)
            nexts.append(al & ~dead)
        if with_state:
            ws = jnp.reshape(obs["world_state"], (E, -1)).astype(jnp.float32)
            bad = bad | jnp.isnan(ws).any(1)
            out["final_state"] = jnp.where(trunc_ep[:, None], ws, 0.0)
        restart = ended | bad
        # the k-th copy to restart (in index order) takes the k-th of the stream's next seeds, as VecEnv's loop does
        new_seeds = jnp.where(restart, nxt[jnp.clip(jnp.cumsum(restart) - 1, 0, E - 1)], seeds)
        st = strong(st)
        obs = strong(obs)

        def fresh():
            o, s = jax.vmap(env.reset)(keys_of(new_seeds))
            return strong({k: o[k] for k in keys_needed}), strong(s)

        obs_re, st_re = lax.cond(restart.any(), fresh, lambda: (obs, st))

        def pick(a, b):
            return jnp.where(jnp.reshape(restart, (E,) + (1,) * (a.ndim - 1)), a, b)

        new_state = jax.tree.map(pick, st_re, st)
        new_obs = {k: pick(obs_re[k], obs[k]) for k in keys_needed}
        out.update(observe(new_obs, new_state, tuple(jnp.where(restart[:, None], True, nx) for nx in nexts)))
        out.update(seeds=new_seeds, t=jnp.where(restart, 0, length).astype(jnp.int32), length=length, ended=ended,
                   bad=bad)
        return new_state, out

    return step_fn, reset_fn
