"""The one-line error convention of every script and tool.

Bad input raises `UserError` (what is wrong and what to do, in one line); `main_guard` prints it on
stderr and exits with 2, never with a traceback, before anything is written. `Parser` is argparse
with the same convention for a bad flag.
"""
import argparse
import sys


class UserError(Exception):
    """Bad input: what is wrong and what to do, in one line."""


class Parser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line on stderr and exit 2 (no usage dump)."""

    def error(self, message):
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def own_and_train_flags(argv, example):
    """A wrapper's command line, OWN FLAGS -- TRAIN.PY FLAGS, split in two; without the -- one line
    saying what belongs after it (`example`: such flags)."""
    if "--" not in argv:
        raise UserError(f"give train.py's flags for the setup after --, e.g. -- {example}")
    i = argv.index("--")
    return argv[:i], argv[i + 1:]


def main_guard(main):
    """Run main(); a UserError becomes one line on stderr and exit status 2."""
    try:
        main()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
