"""The ``hpcmarl`` command (the console script, and ``python -m hpcmarl``): for ``train`` the stop signals' handlers
come first, before argparse and before torch or MPI are imported; then :func:`hpcmarl.cli.main`. Output to a reader
that went away (``hpcmarl inspect RUN | head -3``) ends the command quietly, as other command-line tools do."""
import os
import sys

from hpcmarl import stopsignals


def main():
    stopsignals.install_for(sys.argv[1:])
    from hpcmarl.cli import main as cli_main

    try:
        try:
            cli_main()
        finally:
            sys.stdout.flush()  # (inside the try: a closed pipe found at the final flush too)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing more to write at exit
        sys.exit(141)  # 128 + SIGPIPE, what a shell reports for a tool that the closed pipe ended


if __name__ == "__main__":
    main()
