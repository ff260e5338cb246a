"""The command line: the typer app, one thin command per verb (parse, call one use case,
render), and `main`, the one place that turns errors into exit codes.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """The console script. `fpmon --version` answers before typer and rich are imported (they
    cost ~100 ms of start-up that a version check does not need); all else goes to the app."""
    args = sys.argv[1:] if argv is None else argv
    if args == ["--version"]:
        from fp_monitor import __version__

        print(f"fpmon {__version__}")
        return 0
    from fp_monitor.cli.app import main as run

    return run(args)
