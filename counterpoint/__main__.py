"""``python -m counterpoint``: the same command line as the ``counterpoint`` script."""

from counterpoint.cli import main

if __name__ == "__main__":
    main()
