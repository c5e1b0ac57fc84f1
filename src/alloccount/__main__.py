"""``python -m alloccount``: the same as the ``alloccount`` console script."""
from alloccount.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
