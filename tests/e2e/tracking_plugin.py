"""Test plugin (``plugins=[tests.e2e.tracking_plugin]``): every rank imports it first. With
``HPCMARL_TEST_TB_FAIL_AT=N`` TensorBoard's ``SummaryWriter.add_scalar`` raises ``OSError(ENOSPC)`` from the N-th
metrics row (step) on, as a full disk would (tests/e2e/test_live_loggers.py)."""
import errno
import os

from torch.utils.tensorboard import SummaryWriter

_add = SummaryWriter.add_scalar
_steps = set()


def _add_failing(self, tag, value, global_step=None, *args, **kwargs):
    at = os.environ.get("HPCMARL_TEST_TB_FAIL_AT")
    _steps.add(global_step)
    if at and len(_steps) >= int(at):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return _add(self, tag, value, global_step, *args, **kwargs)


if getattr(SummaryWriter.add_scalar, "__name__", "") != "_add_failing":  # imported twice: wrap once
    SummaryWriter.add_scalar = _add_failing
