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
