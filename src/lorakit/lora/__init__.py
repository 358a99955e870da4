"""Model surgery: adapt any PyTorch or Hugging Face model with named LoRA adapters, split by concern.

* :mod:`~lorakit.lora.config`: :class:`LoraConfig` and which modules it selects (``find_targets``);
* :mod:`~lorakit.lora.wrappers`: the ``LoraModule`` family and ``WRAPPERS`` (module type -> wrapper);
* :mod:`~lorakit.lora.variants`: initialisations and DoRA as strategy objects the wrappers call;
* :mod:`~lorakit.lora.manage`: inject, switch, delete, disable, merge, unload, combine adapters;
* :mod:`~lorakit.lora.mixed_batch`: ``adapter_batch``, one adapter per batch row.
"""

from .config import DEFAULT_ADAPTER, LoraConfig, find_targets, in_modules
from .manage import (
    active_adapters,
    adapter_names,
    add_weighted_adapter,
    check_adapters_known,
    delete_adapter,
    disable_adapters,
    extra_trainable_names,
    get_config,
    inject,
    lora_modules,
    merge,
    merge_and_unload,
    print_trainable_parameters,
    remove_adapter,
    restore_on_error,
    set_adapter,
    set_module,
    trainable_parameters,
    unload,
    unmerge,
)
from .mixed_batch import AdapterBank, RowPlan, adapter_batch, clear_adapter_banks
from .variants import INITS, VARIANTS, Init, Variant
from .wrappers import (
    LINEAR_TYPES,
    WRAPPERS,
    AdapterError,
    LoraConv,
    LoraEmbedding,
    LoraLinear,
    LoraModule,
    UnknownAdapterError,
    UnsupportedModuleError,
    wrapper_factory,
)

__all__ = [
    "DEFAULT_ADAPTER", "LoraConfig", "find_targets", "in_modules",
    "active_adapters", "add_weighted_adapter", "adapter_names", "check_adapters_known", "delete_adapter",
    "disable_adapters", "extra_trainable_names", "get_config", "inject", "lora_modules", "merge",
    "merge_and_unload", "print_trainable_parameters", "remove_adapter", "restore_on_error", "set_adapter",
    "set_module", "trainable_parameters", "unload", "unmerge",
    "AdapterBank", "RowPlan", "adapter_batch", "clear_adapter_banks",
    "INITS", "VARIANTS", "Init", "Variant",
    "AdapterError", "UnknownAdapterError", "UnsupportedModuleError",
    "LINEAR_TYPES", "WRAPPERS", "LoraConv", "LoraEmbedding", "LoraLinear", "LoraModule", "wrapper_factory",
]
