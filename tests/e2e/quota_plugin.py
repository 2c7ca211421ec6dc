"""Test plugin (``plugins=[tests.e2e.quota_plugin]``): every rank imports it first. With ``HPCMARL_TEST_EDQUOT_AT=N``
each checkpoint write from update N on fails as a file system whose quota is used up fails: ``OSError(EDQUOT)`` from
the write of its temporary file (tests/e2e/test_run_guards.py)."""
import errno
import os

from hpcmarl import storage

_save = storage.save_checkpoint


def _save_over_quota(ckpt_dir, update, *args, **kwargs):
    at = os.environ.get("HPCMARL_TEST_EDQUOT_AT")
    if at and int(update) >= int(at):
        path = storage.checkpoint_path(ckpt_dir, update) + f".tmp{os.getpid()}"
        raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT), path)
    return _save(ckpt_dir, update, *args, **kwargs)


if getattr(storage.save_checkpoint, "__name__", "") != "_save_over_quota":  # imported twice: wrap once
    storage.save_checkpoint = _save_over_quota
