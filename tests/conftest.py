"""Suite-wide settings: one JAX compilation cache and one compile cache shared by every process the suite starts."""
import os

import pytest

import hpcmarl.testing  # noqa: F401  (registers the test envs counting_v0, matrix_v0, target_v0 in this process)


@pytest.fixture(scope="session", autouse=True)
def jax_compilation_cache(tmp_path_factory):
    """Every hpcmarl process of the suite that runs a JaxMARL env (serial runs, mpirun ranks, evaluations) compiles
    the same small XLA programs; a persistent cache for this session lets the second one load them (a serial
    JaxMARL run took 20 s without it and 12 s with it on the 2-core VM). Keyed by the program and the JAX version,
    it changes what is compiled, never what runs; a user's own ``JAX_COMPILATION_CACHE_DIR`` wins."""
    if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
        os.environ.update({"JAX_COMPILATION_CACHE_DIR": str(tmp_path_factory.mktemp("jax-cache")),
                           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"})



@pytest.fixture(scope="session", autouse=True)
def compile_cache(tmp_path_factory):
    """Compiled learner updates: ``learner.compile=auto`` would compile the suite's long runs that tests stop after
    seconds (20-30 s each on 2 cores), so it is off here (``HPCMARL_NO_COMPILE=1``); the tests of compiled runs ask
    for ``learner.compile=true``. Inductor's cache (under ``$XDG_CACHE_HOME``) is the suite's own, never the user's
    ``~/.cache`` (a test that checks the cache sets its own)."""
    os.environ.update({"XDG_CACHE_HOME": str(tmp_path_factory.mktemp("xdg-cache")), "HPCMARL_NO_COMPILE": "1"})


# ---- the two tiers --------------------------------------------------------------------------------------------------
# `make test` (the README's command) runs the fast tier: every test of these modules, and of the others the tests named
# here, so that every promise is exercised at least once (every flow across ranks, exact resume, a hang, a signal, a
# crafted file, a killed run, a full disk, a league, Slurm) in about 10 minutes on the 2-core VM. Every other test is
# marked `slow`: `make test-slow` runs those, `make test-all` both (CI runs the two tiers one after the other).
FAST_MODULES = ("tests/unit/", "tests/analysis/", "tests/e2e/test_disk_full.py")
FAST_TESTS = (
    # every flow across 2 learners and 2 actors: synchronous (MAPPO), asynchronous (MA-Trace), gradients (NIGT
    # Malenia), value-based with sparse training (QMIX + MAST)
    "tests/mpi/test_matrix.py::test_combination_runs[mappo-2l2a]",
    "tests/mpi/test_matrix.py::test_combination_runs[matrace-2l2a-per_agent-drop]",
    "tests/mpi/test_matrix.py::test_combination_runs[nigt-2l2a-malenia]",
    "tests/mpi/test_matrix.py::test_combination_runs[qmix-2l2a-sparse-hard-tdlambda]",
    "tests/mpi/test_league_mpi.py::test_cooperative_league_with_pool_partners",
    "tests/e2e/test_exact_resume.py::test_sigterm_and_resume_equal_an_uninterrupted_run[mappo]",
    "tests/mpi/test_hangs.py::test_a_hung_rank_ends_the_job_within_its_bound[rollouts-learner-update]",
    "tests/e2e/test_signals.py::test_a_signal_in_the_first_moments_stops_resumably[SIGTERM]",
    "tests/e2e/test_kill_resume.py::test_a_killed_run_resumes_with_nothing_lost_or_duplicated[learner_exits]",
    "tests/e2e/test_end_to_end.py::test_four_ranks_produce_outputs_and_resume_continues",
    "tests/e2e/test_end_to_end.py::test_serial_mode_one_process",
    "tests/e2e/test_end_to_end.py::test_exception_on_one_rank_ends_job_fast[1]",
    "tests/e2e/test_run_guards.py::test_a_lock_left_by_a_dead_job_is_taken_over",
    "tests/slurm/test_slurm.py::test_slurm_scripts_pass_test_only",
    "tests/slurm/test_slurm.py::test_slurm_train_job_writes_outputs",
)


def pytest_collection_modifyitems(config, items):
    ids = {item.nodeid for item in items}
    files = {i.split("::")[0] for i in ids}
    whole = not any("::" in str(a) for a in config.args)  # (a test named on the command line: its file is not whole)
    gone = [t for t in FAST_TESTS if whole and t.split("::")[0] in files and t not in ids]
    if gone:  # a renamed test would silently leave the fast tier
        raise pytest.UsageError(f"tests/conftest.py FAST_TESTS names tests that do not exist: {', '.join(gone)}")
    for item in items:
        if not item.nodeid.startswith(FAST_MODULES) and item.nodeid not in FAST_TESTS:
            item.add_marker(pytest.mark.slow)
