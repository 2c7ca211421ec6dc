"""``tests/launch.py: require_extra`` at a test module's import: a missing extra skips the module, unless
``HPCMARL_EXTRAS`` lists it (``make test``), where it fails."""
import os
import subprocess
import sys

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

MODULE = '''from launch import require_extra
require_extra("hpcmarl_no_such_module", "nosuch")


def test_needs_it():
    pass
'''


def run_pytest(tmp_path, extras: str) -> subprocess.CompletedProcess:
    (tmp_path / "test_needs_extra.py").write_text(MODULE)
    env = dict(os.environ, PYTHONPATH=TESTS, HPCMARL_EXTRAS=extras)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", str(tmp_path)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def test_a_missing_extra_skips_the_module_at_import(tmp_path):
    p = run_pytest(tmp_path, "")
    # a skip, not a collection error (exit 2); 5 = no test ran, as when every module is skipped
    assert p.returncode == 5 and "error" not in p.stdout, p.stdout + p.stderr
    assert "1 skipped" in p.stdout and 'pip install -e ".[nosuch]"' in p.stdout, p.stdout


def test_a_missing_extra_that_make_test_installs_fails(tmp_path):
    p = run_pytest(tmp_path, "nosuch")
    assert p.returncode != 0 and "ModuleNotFoundError" in p.stdout, p.stdout
