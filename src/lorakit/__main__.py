"""``python -m lorakit SUBCOMMAND ...``: the same dispatcher as the ``lorakit`` console script."""

import sys

from lorakit.cli import main

if __name__ == "__main__":
    sys.exit(main())
