"""``python -m primus_core``: the ``primus`` command line."""

from primus_core.cli import main

if __name__ == "__main__":
    main()
