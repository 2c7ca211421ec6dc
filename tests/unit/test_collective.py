"""Named statistics summed across learners in one reduction (``Collective.sum_named``), without MPI: a
communicator of one, and one standing for two learners that hold the same values."""
import types

import numpy as np

from hpcmarl.comm.collective import Collective


class TwoLike(Collective):
    def sum_small(self, x):  # two learners with equal statistics: every sum doubles
        return 2 * np.asarray(x, np.float64)


def test_sum_named_keeps_names_scalars_and_arrays():
    comm = types.SimpleNamespace(Get_rank=lambda: 0, Get_size=lambda: 1)
    values = {"steps": 7, "stop": True, "dropped": np.array([1, 0, 3]), "t": 0.25, "none": []}
    one = Collective(comm, "mpi").sum_named(values)
    assert list(one) == list(values)
    assert one["steps"] == 7.0 and one["stop"] == 1.0 and one["t"] == 0.25 and one["none"].size == 0
    np.testing.assert_array_equal(one["dropped"], [1.0, 0.0, 3.0])
    two = TwoLike(comm, "mpi").sum_named(values)
    assert (two["steps"], two["stop"], two["t"]) == (14.0, 2.0, 0.5) and isinstance(two["steps"], float)
    np.testing.assert_array_equal(two["dropped"], [2.0, 0.0, 6.0])
    assert Collective(comm, "mpi").sum_named({}) == {}
