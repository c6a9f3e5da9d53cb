"""Shared test helpers (pytest puts this folder on sys.path: test modules import from here)."""

import contextlib
import io


def run_cli(*args) -> tuple[int, str, str]:
    """`lazy ARGS...` in this process: (exit code, stdout, stderr)."""
    from lazy.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(list(args))
        except SystemExit as e:  # argparse's usage errors
            rc = e.code
    return rc, out.getvalue(), err.getvalue()
