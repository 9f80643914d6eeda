"""``python -m mlbook`` and the ``mlbook`` console script."""

import sys


def main() -> None:
    """Entry point of the ``mlbook`` command. ``mlbook run`` starts its first child
    before the CLI loads (:func:`mlbook.experiments._spare.prestart`)."""
    if sys.argv[1:2] == ["run"] and not {"-h", "--help"} & set(sys.argv[2:]):
        from mlbook.experiments._spare import prestart

        prestart(sys.argv[2:])
    from mlbook.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
