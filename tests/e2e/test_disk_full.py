"""A full run directory: the run stops with one line naming the path and the free space, the newest checkpoint stays
complete, run.h5 readable, and the same command resumes once there is space again."""
import collections
import errno
import glob
import os
import subprocess

import numpy as np
import pytest

from hpcmarl import storage

from launch import ROOT, hpcmarl, mpirun, requires_mpirun


def test_ensure_space_names_the_path_and_the_free_space(monkeypatch, tmp_path):
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(storage.shutil, "disk_usage", lambda p: usage(100 * 2 ** 20, 99 * 2 ** 20, 2 ** 20))
    target = str(tmp_path / "sub" / "ckpt.h5")  # a path that does not exist yet: its nearest directory is asked
    storage.ensure_space(target, 0, reserve_mb=0.5)
    with pytest.raises(storage.DiskFull, match=r"ckpt.h5: its file system has 1.0 MiB free of 100.0 MiB, 2.5 MiB"):
        storage.ensure_space(target, 2 ** 21, reserve_mb=0.5)
    assert storage.disk_full(storage.DiskFull("x"))
    assert not storage.disk_full(RuntimeError("wrapped"))
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as e:
            raise RuntimeError("flush failed") from e
    except RuntimeError as e:
        assert storage.disk_full(e)


def test_a_failed_checkpoint_write_leaves_no_temporary_file(monkeypatch, tmp_path):
    d = str(tmp_path / "checkpoints")
    storage.save_checkpoint(d, 1, {"w": np.ones(3)}, {}, keep=3)

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(storage.h5py.Group, "create_dataset", full)
    with pytest.raises(OSError):
        storage.save_checkpoint(d, 2, {"w": np.ones(3)}, {}, keep=3)
    assert sorted(os.listdir(d)) == ["ckpt-000000001.h5"]
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(storage.shutil, "disk_usage", lambda p: usage(2 ** 30, 2 ** 30, 0))
    with pytest.raises(storage.DiskFull):  # checked before anything is written
        storage.save_checkpoint(d, 3, {"w": np.ones(3)}, {}, keep=3)
    assert sorted(os.listdir(d)) == ["ckpt-000000001.h5"]


@pytest.fixture
def small_fs(tmp_path):
    """A 4 MiB tmpfs (root only; skipped where mounting is not allowed)."""
    mnt = tmp_path / "fs"
    mnt.mkdir()
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if p.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({p.stderr.strip() or 'not root'})")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


@requires_mpirun
@pytest.mark.mpi
def test_a_full_run_directory_stops_cleanly_and_resumes(small_fs):
    run = str(small_fs / "run")
    args = ["train", os.path.join(ROOT, "configs", "test_tiny.yaml"), f"run_dir={run}", "output.checkpoint_every=20",
            "output.min_free_mb=1.5", "output.flush_s=0.5"]
    p = mpirun(2, args + ["train.total_env_steps=100000000"], timeout=180)
    assert p.returncode != 0
    lines = [ln for ln in p.stderr.splitlines() if ln.startswith("hpcmarl: rank")]
    assert len(lines) >= 1 and "Traceback" not in p.stderr and "Segmentation" not in p.stderr, p.stderr[-2000:]
    # our check before a write names the file; ENOSPC met by another rank's write names the run directory
    assert "no space left " in lines[0] and run in lines[0] and "MiB free of" in lines[0], lines
    ckpts = storage.list_checkpoints(os.path.join(run, "checkpoints"))
    assert ckpts and f"the newest complete checkpoint is {ckpts[-1]}" in lines[0]
    assert not glob.glob(os.path.join(run, "checkpoints", "*.tmp*"))
    _, attrs = storage.load_checkpoint(ckpts[-1])
    ins = hpcmarl(["inspect", run])
    assert ins.returncode == 0, ins.stderr
    # space again: the same command resumes from the newest checkpoint and finishes
    subprocess.run(["mount", "-o", "remount,size=16m", str(small_fs)], check=True)
    target = int(attrs["env_steps"]) + 300
    p = mpirun(2, args + [f"train.total_env_steps={target}"], timeout=180)
    assert p.returncode == 0, p.stderr[-2000:]
    assert f"resumed from {os.path.basename(ckpts[-1])}" in p.stdout
    assert "finished (total_env_steps reached)" in p.stdout
