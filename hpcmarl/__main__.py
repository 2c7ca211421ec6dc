"""The ``hpcmarl`` command (the console script, and ``python -m hpcmarl``): for ``train`` the stop signals' handlers
come first, before argparse and before torch or MPI are imported; then :func:`hpcmarl.cli.main`."""
import sys

from hpcmarl import stopsignals


def main():
    stopsignals.install_for(sys.argv[1:])
    from hpcmarl.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
