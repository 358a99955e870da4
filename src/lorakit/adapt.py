"""Kept so that ``lorakit.adapt`` imports keep working: model surgery now lives in :mod:`lorakit.lora`
(``config``, ``wrappers``, ``variants``, ``manage``, ``mixed_batch``). Import from there."""

from .layers import BIAS_MODES
from .lora import *  # noqa: F403
from .lora import __all__ as _lora_all
from .lora.mixed_batch import PLAN_CACHE_SIZE, PLAN_GATHER_BYTES
from .lora.wrappers import HFConv1D

__all__ = [*_lora_all, "BIAS_MODES", "HFConv1D", "PLAN_CACHE_SIZE", "PLAN_GATHER_BYTES"]
