"""Run an experiment: ``python main.py --config CONFIG --data DATA_DIR --workdir WORK_DIR``.

Also ``python main.py eval WORKDIR ...``, ``python main.py inspect CONFIG_OR_WORKDIR`` and every other
``lorakit`` subcommand: main.py runs the one dispatcher (``lorakit.cli``), with ``train`` when no subcommand
is named. Under torchrun, every process runs this file:
``torchrun --nproc_per_node 2 main.py --config ... --data ... --workdir ...``.
"""

import sys

try:
    from lorakit.cli import main
except ImportError:  # a checkout that was not pip-installed: use src/ directly
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))
    from lorakit.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], default="train"))
