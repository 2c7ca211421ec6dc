"""The league rank at scale: its payoff table is sparse (checkpoints grow with the games played, not with the square
of the pool), matrices built from it equal the cell-by-cell definition, and checkpoints restore payoff and lineage
exactly (also from the dense form older checkpoints hold)."""
import numpy as np
import pytest

from hpcmarl.config import load_config
from hpcmarl.league import server
from hpcmarl.league.matchmaking import Payoff
from hpcmarl.league.pool import LOOKAHEAD, RANDOM
from hpcmarl.league.server import League, live_id

C4 = ["env.name=connect_four_v3", "league.enabled=true", "algo.name=ippo"]
ATTRS = {"group": "main", "policy_group": "player", "env": "connect_four_v3", "obs_dim": 84, "n_actions": 7,
         "hidden": 8, "layers": 1}
PAYOFF_KEYS = ("league/payoff_ids", "league/payoff_pairs", "league/payoff_pair_returns")


@pytest.fixture
def no_pool_files(monkeypatch):
    """Pool snapshots are not written (thousands of members in a unit test); the league state is the same."""
    monkeypatch.setattr(server, "write_snapshot", lambda path, params, attrs: path)


def grow(lg: League, n: int, gi: int = 0, group: str = "main", policy_group: str = "player") -> None:
    for _ in range(n):
        v = len(lg.members) + 1
        lg.add_member(gi, v, v, np.zeros(4, np.float32), {**ATTRS, "group": group, "policy_group": policy_group,
                                                          "version": v})


def nbytes(arrays, keys=None) -> int:
    return sum(np.asarray(v).nbytes for k, v in arrays.items() if keys is None or k in keys)


def test_checkpoint_grows_with_games_not_with_members_squared(tmp_path, no_pool_files):
    lg = League(load_config(None, C4 + ["league.eval_every=0"]), str(tmp_path), seed=0)
    grow(lg, 2000)
    rng = np.random.default_rng(0)
    games = [(int(m), float(s), float(s) * 2 - 1) for m, s in zip(rng.integers(0, 2000, 100),
                                                                  rng.choice([1.0, 0.5, 0.0], 100))]
    lg.report(0, games)
    st = lg.state_arrays()
    pairs = len({m for m, _, _ in games})
    assert st["league/payoff_pairs"].shape == (pairs, 5) and lg.payoff.pairs() == pairs
    assert "league/payoff_counts" not in st  # the dense N x N x 3 table is gone
    assert nbytes(st) < 2000 ** 2 / 8  # well below a byte per pair of members (the dense table took 32 per pair)
    assert nbytes(st, PAYOFF_KEYS) < 200 * pairs  # ids, 5 int64 and 1 float64 per pair played
    # games between pairs that already played add nothing; new pairs add their rows; members without games only
    # their member and rating rows (linear in the pool)
    lg.report(0, games)
    assert nbytes(lg.state_arrays(), PAYOFF_KEYS) == nbytes(st, PAYOFF_KEYS)
    lg.report(0, [(1999, 1.0, 1.0)] + [(m, 0.0, -1.0) for m in range(2000) if m not in {g[0] for g in games}][:50])
    more = lg.state_arrays()
    assert more["league/payoff_pairs"].shape[0] > pairs and nbytes(more, PAYOFF_KEYS) > nbytes(st, PAYOFF_KEYS)
    before = nbytes(more)
    grow(lg, 2000)
    bigger = lg.state_arrays()
    assert nbytes(bigger, PAYOFF_KEYS) == nbytes(more, PAYOFF_KEYS) and nbytes(bigger) < 3 * before


def two_lineages(tmp_path, rounds: int = 30) -> League:
    """Predators and prey (two policy groups, two lineages), reports, evaluations and ratings rows."""
    cfg = load_config(None, ["env.name=simple_tag_v3", "league.enabled=true", "league.eval_games=3",
                             "league.groups=[{name: pred, policy_group: adversary, snapshot_every: 2}, "
                             "{name: prey, policy_group: agent, snapshot_every: 3}]"])
    lg = League(cfg, str(tmp_path), seed=1)
    rng = np.random.default_rng(1)
    for update in range(1, rounds + 1):
        for gi, (name, pg) in enumerate((("pred", "adversary"), ("prey", "agent"))):
            if lg.snapshot_due(gi, update):
                lg.add_member(gi, update, update, np.zeros(4, np.float32), {**ATTRS, "group": name,
                                                                            "policy_group": pg, "version": update})
            opts = lg.assignment(gi)[lg.opponent_groups(gi)[0]]
            p = np.array([q for _, q in opts])
            lg.report(gi, [(opts[int(rng.choice(len(opts), p=p / p.sum()))][0], float(rng.choice([1, 0.5, 0])),
                            float(rng.normal())) for _ in range(5)])
        while lg.eval_queue:
            a, b = lg.eval_queue.pop(0)
            w = int(rng.integers(0, 4))
            lg.record_eval(a, b, w, 0, 3 - w, float(rng.normal()))
        lg.take_rows(update)
    return lg


def assert_same_league(a: League, b: League) -> None:
    keys = [a.key(m) for m in [live_id(0), live_id(1), RANDOM, LOOKAHEAD] + list(a.members)]
    for kind in ("win_rate", "return"):
        np.testing.assert_array_equal(a.payoff.matrix(keys, kind), b.payoff.matrix(keys, kind))
    for x in keys:
        for y in keys:
            assert list(a.payoff.counts(x, y)) == list(b.payoff.counts(x, y))
            assert a.payoff.mean_return(x, y) == b.payoff.mean_return(x, y)
    for pg in ("adversary", "agent"):
        assert a.lineage(pg) == b.lineage(pg)
    for gi in (0, 1):
        assert a.newest(gi) == b.newest(gi) and a.win_rate_vs_pool(gi) == b.win_rate_vs_pool(gi)
        assert a.assignment(gi) == b.assignment(gi)


def test_checkpoint_round_trip_restores_payoff_and_lineage_exactly(tmp_path, no_pool_files):
    from hpcmarl.storage import load_checkpoint, save_checkpoint

    lg = two_lineages(tmp_path)
    assert lg.lineage("adversary") == [m for m, d in lg.members.items() if d["group"] == 0] and lg.payoff.pairs() > 10
    st = lg.state_arrays()
    back, _ = load_checkpoint(save_checkpoint(str(tmp_path / "ckpt"), 30, st, {}, keep=1))  # ids come back as bytes
    again = League(lg.cfg, str(tmp_path), seed=1)
    again.load_state_arrays(back)
    assert_same_league(lg, again)
    for k, v in again.state_arrays().items():
        if k != "league/counters":  # it holds the wall clock
            np.testing.assert_array_equal(v, st[k], err_msg=k)
    # the first ratings rows after a resume cover every member again, as they did before the indices
    rows = again.take_rows(31)["league/ratings"]
    assert sorted(r[2] for r in rows if r[2] >= 0) == sorted(lg.members)


def test_older_checkpoints_with_the_dense_payoff_table_load(tmp_path, no_pool_files):
    lg = two_lineages(tmp_path, rounds=12)
    old = {k: v for k, v in lg.state_arrays().items() if k not in PAYOFF_KEYS}
    ids, counts, returns = lg.payoff.state_arrays()  # the N x N form checkpoints held before
    assert counts.shape == (len(ids), len(ids), 3)
    old.update({"league/payoff_ids": np.array(ids, dtype="S"), "league/payoff_counts": counts,
                "league/payoff_returns": returns})
    again = League(lg.cfg, str(tmp_path), seed=1)
    again.load_state_arrays(old)
    assert_same_league(lg, again)
    assert again.payoff.pairs() == lg.payoff.pairs()


def test_payoff_matrix_equals_the_cell_by_cell_definition():
    pay, rng = Payoff(), np.random.default_rng(2)
    ids = [f"m{i}" for i in range(12)]
    for _ in range(300):
        a, b = rng.choice(ids, 2)
        pay.record(a, b, float(rng.choice([1, 0.5, 0])), float(rng.normal()))
    pay.record("m0", "m0", 1.0)  # against itself: a win and a loss
    pay.add_return("m3", "x", 2.0)  # a return without games
    query = ids + ["nobody", "m4", "x"]  # unknown ids and repeats
    for kind, cell in (("win_rate", pay.win_rate), ("return", pay.mean_return)):
        want = np.array([[cell(a, b) for b in query] for a in query])
        np.testing.assert_array_equal(pay.matrix(query, kind), want)  # bit for bit: matchmaking stays the same
    np.testing.assert_array_equal(pay.matrix(query, prior=0.3, prior_games=2.0),
                                  [[pay.win_rate(a, b, 0.3, 2.0) for b in query] for a in query])
    assert pay.matrix([]).shape == (0, 0)
    sparse, dense = Payoff(), Payoff()
    sparse.load_sparse_arrays(*pay.sparse_arrays())
    dense.load_state_arrays(*pay.state_arrays())
    for other in (sparse, dense):
        for kind in ("win_rate", "return"):
            np.testing.assert_array_equal(other.matrix(query, kind), pay.matrix(query, kind))
    w, _, l = pay.counts("m0", "m0")
    assert w == l >= 1 and pay.games("m3", "x") == 0 and pay.mean_return("m3", "x") == 0.0
    with pytest.raises(ValueError):
        sparse.load_sparse_arrays(["a", "b"], np.array([[1, 0, 1, 0, 0]]))  # rows are (i, j) with i <= j
