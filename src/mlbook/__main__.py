"""``python -m mlbook`` and the ``mlbook`` console script."""

import sys


def main() -> None:
    """Entry point of the ``mlbook`` command. ``mlbook [-C DIR] run ...`` starts its first
    child before the CLI loads (:func:`mlbook.experiments._spare.prestart`)."""
    args, start = sys.argv[1:], None
    if args[:1] == ["-C"] and len(args) > 2:
        start, args = args[1], args[2:]
    if args[:1] == ["run"] and not {"-h", "--help"} & set(args):
        from pathlib import Path

        from mlbook.experiments._spare import prestart

        prestart(args[1:], Path(start) if start is not None else None)
    from mlbook.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
