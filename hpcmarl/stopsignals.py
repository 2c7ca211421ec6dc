"""The stop signals of ``hpcmarl train`` (SIGTERM, SIGUSR1, SIGUSR2): one flag, set by their handlers and read by every
role (:meth:`hpcmarl.launch.Context.stop_requested`). Standard library only, so the ``hpcmarl`` command
(:mod:`hpcmarl.__main__`) installs the handlers before it imports anything else."""
import signal
import threading

SIGNALS = ("SIGTERM", "SIGUSR1", "SIGUSR2")
EXIT_PREEMPTED = 75  # EX_TEMPFAIL: stopped by a signal after a final checkpoint; run again to resume

signalled = threading.Event()  # a stop signal arrived


def install() -> None:
    """SIGTERM/SIGUSR1/SIGUSR2 ask the run to stop with a final checkpoint (exit 75): the flag is kept and honoured at
    the first stop vote, however early the signal came."""
    for name in SIGNALS:
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), lambda signum, frame: signalled.set())


def install_for(args) -> None:
    """:func:`install` when ``args`` (the command line after the program's name) is a ``train`` command; every other
    command keeps the default signal behaviour."""
    if list(args[:1]) == ["train"]:
        install()
