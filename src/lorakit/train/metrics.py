"""Deprecated: the metrics moved to :mod:`lorakit.metrics` (they need no training). This alias, with its
submodules ``classification``, ``lm``, ``nlg`` and ``qa``, goes in the next release."""

from __future__ import annotations

import sys
import warnings

from lorakit import metrics as _metrics
from lorakit.metrics import *  # noqa: F403
from lorakit.metrics import __all__, classification, lm, nlg, qa  # noqa: F401

warnings.warn("lorakit.train.metrics moved to lorakit.metrics; import it from there", DeprecationWarning,
              stacklevel=2)
for _name in ("classification", "lm", "nlg", "qa"):  # `import lorakit.train.metrics.nlg` keeps working
    sys.modules[f"{__name__}.{_name}"] = getattr(_metrics, _name)
