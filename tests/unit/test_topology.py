"""Rank -> role layout (pure function of world size and the topology config)."""
from __future__ import annotations

import pytest

from hpcmarl.topology import ACTOR, LEARNER, TopologyError, make_layout


def _cases():
    for world in range(2, 65):
        for learners in sorted({1, 2, 3, 4, 7, 8, world // 2, world // 2 + 1, world - 1}):
            if 1 <= learners and 2 * learners <= world:  # every learner needs an actor
                yield world, learners


CASES = list(_cases())


def test_case_list_is_broad():
    assert len(CASES) > 200
    assert (64, 32) in CASES and (2, 1) in CASES and (63, 31) in CASES


@pytest.mark.parametrize("world,learners", CASES)
def test_layout_invariants(world, learners):
    lay = make_layout(world, learners)
    n_actors = world - learners
    assert (lay.world_size, lay.learners, lay.actors) == (world, learners, n_actors)
    assert not lay.serial

    roles = lay.roles()
    assert [r for r, _ in roles] == list(range(world))  # every rank exactly once
    learner_ranks = [r for r, role in roles if role == LEARNER]
    actor_ranks = [r for r, role in roles if role == ACTOR]
    assert learner_ranks == list(range(learners))
    assert actor_ranks == list(range(learners, world))
    for r in range(world):
        assert lay.role(r) == (LEARNER if r < learners else ACTOR)

    served = {}
    for i in range(n_actors):
        rank = lay.actor_rank(i)
        assert rank == learners + i
        assert lay.actor_index(rank) == i
        lr = lay.learner_of(i)
        assert lr == i % learners
        assert lay.role(lr) == LEARNER
        served.setdefault(lr, []).append(rank)
    # actors_of is the inverse of learner_of; every actor is served by exactly one learner
    all_served = []
    for lr in range(learners):
        mine = lay.actors_of(lr)
        assert mine == served.get(lr, [])
        assert len(mine) >= 1
        assert all(lay.learner_of(lay.actor_index(a)) == lr for a in mine)
        all_served += mine
    assert sorted(all_served) == actor_ranks
    # load is balanced: actor counts differ by at most one between learners
    counts = [len(lay.actors_of(lr)) for lr in range(learners)]
    assert max(counts) - min(counts) <= 1 and sum(counts) == n_actors


@pytest.mark.parametrize("world,learners", [(4, 2), (9, 3), (64, 8)])
def test_explicit_actor_count_matching_world(world, learners):
    assert make_layout(world, learners, world - learners) == make_layout(world, learners, "auto")


def test_describe_lists_every_rank():
    lay = make_layout(7, 2)
    text = lay.describe({r: f"node{r // 4}" for r in range(7)})
    lines = text.splitlines()
    assert len(lines) == 1 + 7
    assert "7" in lines[0] and "2 learner(s)" in lines[0] and "5 actor(s)" in lines[0]
    assert "(lead)" in lines[1] and "learner" in lines[1]
    assert "actor 1" in lines[4] and "served by learner 1" in lines[4]  # rank 3
    assert "actor 2" in lines[5] and "served by learner 0" in lines[5]  # rank 4
    assert "on node1" in lines[1 + 5]


@pytest.mark.parametrize("actors", ["auto", 0])
def test_serial_mode(actors):
    lay = make_layout(1, 1, actors)
    assert lay.serial
    assert (lay.world_size, lay.learners, lay.actors) == (1, 1, 0)
    assert lay.roles() == [(0, LEARNER)]
    assert lay.actors_of(0) == []
    assert "serial" in lay.describe()


def test_role_outside_world():
    lay = make_layout(4, 1)
    for bad in (-1, 4, 100):
        with pytest.raises(TopologyError) as ei:
            lay.role(bad)
        assert str(bad) in str(ei.value) and "4" in str(ei.value)


@pytest.mark.parametrize("world,learners", [(1, 2), (2, 2), (4, 4), (4, 5), (16, 16), (64, 100)])
def test_too_many_learners(world, learners):
    with pytest.raises(TopologyError) as ei:
        make_layout(world, learners)
    msg = str(ei.value)
    assert f"topology.learners={learners}" in msg
    assert f"{world} rank" in msg


def test_one_rank_with_an_actor_is_not_serial():
    with pytest.raises(TopologyError) as ei:
        make_layout(1, 1, 1)
    assert "1" in str(ei.value)


@pytest.mark.parametrize("world,learners,actors", [(4, 1, 2), (4, 1, 5), (8, 2, 3), (3, 1, 0)])
def test_actor_count_not_matching_world(world, learners, actors):
    with pytest.raises(TopologyError) as ei:
        make_layout(world, learners, actors)
    msg = str(ei.value)
    assert f"topology.actors={actors}" in msg
    assert f"has {world}" in msg
    assert str(learners + actors) in msg


@pytest.mark.parametrize("world,learners", [(3, 2), (5, 3), (64, 33), (10, 6)])
def test_fewer_actors_than_learners(world, learners):
    with pytest.raises(TopologyError) as ei:
        make_layout(world, learners)
    msg = str(ei.value)
    assert f"{world - learners} actor" in msg and f"{learners} learner" in msg


@pytest.mark.parametrize("world,learners", [(0, 1), (-3, 1), (4, 0), (4, -1)])
def test_nonpositive_sizes(world, learners):
    with pytest.raises(TopologyError) as ei:
        make_layout(world, learners)
    assert str(world if world < 1 else learners) in str(ei.value)
