"""``python -m mlbook``: the same as the ``mlbook`` command."""

from mlbook.cli import main

if __name__ == "__main__":
    main()
