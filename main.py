"""Run an experiment: ``python main.py --config CONFIG --data DATA_DIR --workdir WORK_DIR``.

Also ``python main.py eval WORKDIR ...`` and ``python main.py inspect CONFIG_OR_WORKDIR``; the same
commands as ``lorakit train|eval|inspect``. Under torchrun, every process runs this file:
``torchrun --nproc_per_node 2 main.py --config ... --data ... --workdir ...``.
"""

import sys

try:
    from lorakit.train.commands import dispatch
except ImportError:  # a checkout that was not pip-installed: use src/ directly
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))
    from lorakit.train.commands import dispatch

if __name__ == "__main__":
    sys.exit(dispatch(sys.argv[1:]))
