"""lorakit: LoRA (Hu et al., 2021) layers, model adaptation and experiments.

``import lorakit as lora`` is a drop-in replacement for ``import loralib as lora``.
"""

from .layers import (
    Conv1d,
    Conv2d,
    Conv3d,
    ConvLoRA,
    Embedding,
    Linear,
    LoRALayer,
    MergedLinear,
    lora_state_dict,
    mark_only_lora_as_trainable,
)

__version__ = "0.1.0"

__all__ = [
    "LoRALayer", "Linear", "Embedding", "MergedLinear", "Conv1d", "Conv2d", "Conv3d", "ConvLoRA",
    "mark_only_lora_as_trainable", "lora_state_dict",
]

from .errors import LorakitError  # noqa: E402
from .io import (  # noqa: E402
    AdapterFileError,
    AdapterFileNotFoundError,
    convert_loralib_checkpoint,
    hotswap_adapter,
    load_adapter,
    load_checkpoint,
    save_adapter,
)
from .lora import (  # noqa: E402
    AdapterError,
    LoraConfig,
    UnknownAdapterError,
    UnsupportedModuleError,
    active_adapters,
    adapter_batch,
    add_weighted_adapter,
    delete_adapter,
    disable_adapters,
    find_targets,
    get_config,
    inject,
    merge,
    merge_and_unload,
    print_trainable_parameters,
    remove_adapter,
    set_adapter,
    trainable_parameters,
    unload,
    unmerge,
)
from .methods import (  # noqa: E402
    MethodConfig,
    MethodError,
    count_parameters,
    drop_reparameterization,
)
from .methods import apply_method as apply_baseline  # noqa: E402

__all__ += ["MethodConfig", "MethodError", "apply_baseline", "count_parameters", "drop_reparameterization"]

__all__ += [
    "LoraConfig", "inject", "find_targets", "get_config", "merge", "unmerge", "merge_and_unload", "unload",
    "remove_adapter", "trainable_parameters", "print_trainable_parameters", "save_adapter", "load_adapter",
    "load_checkpoint", "convert_loralib_checkpoint", "set_adapter", "active_adapters", "delete_adapter",
    "disable_adapters", "add_weighted_adapter", "adapter_batch", "hotswap_adapter",
]
__all__ += ["LorakitError", "AdapterError", "UnknownAdapterError", "UnsupportedModuleError", "AdapterFileError",
            "AdapterFileNotFoundError"]

from .losses import LossInputError, causal_lm_loss, count_label_tokens, linear_cross_entropy  # noqa: E402

__all__ += ["linear_cross_entropy", "causal_lm_loss", "count_label_tokens", "LossInputError"]
