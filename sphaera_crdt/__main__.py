"""``python -m sphaera_crdt``: the same command as ``sphaera``."""

from .cli import main

if __name__ == "__main__":
    main()
