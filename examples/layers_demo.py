"""A short, real tour of the loralib-compatible layer API (``import lorakit as lora``).

Trains a small MLP classifier with LoRA layers on a synthetic task, merges, saves the LoRA-only
checkpoint, reloads it into a fresh model and shows equal outputs and the parameter savings.
Runs in a few seconds on a CPU: ``python examples/layers_demo.py``.
"""

from __future__ import annotations

import os
import tempfile

import torch
from torch import nn

import lorakit as lora


def make_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)  # the same "pretrained" base weights every time
    return nn.Sequential(
        lora.Linear(64, 256, r=8, lora_alpha=16), nn.GELU(),
        lora.Linear(256, 256, r=8, lora_alpha=16), nn.GELU(),
        nn.Linear(256, 4),
    )


def main() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2048, 64, generator=g)
    teacher = torch.randn(64, 4, generator=g)
    y = (x @ teacher + 0.1 * torch.randn(2048, 4, generator=g)).argmax(-1)

    model = make_model()
    lora.mark_only_lora_as_trainable(model)
    model[4].weight.requires_grad_(True)  # the task head trains fully
    model[4].bias.requires_grad_(True)
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(f"parameters: {total:,} total, {trainable:,} trainable ({100 * trainable / total:.2f}%)")

    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    for epoch in range(8):
        for i in range(0, 2048, 128):
            loss = nn.functional.cross_entropy(model(x[i:i + 128]), y[i:i + 128])
            opt.zero_grad()
            loss.backward()
            opt.step()
        print(f"epoch {epoch}: loss {loss.item():.3f}")

    model.eval()  # merges W + (alpha/r) BA for inference; the stored weights stay pretrained
    with torch.no_grad():
        accuracy = (model(x).argmax(-1) == y).float().mean().item()
        reference = model(x[:8])
    print(f"train accuracy after LoRA fine-tuning: {accuracy:.3f}")

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "lora.pt")
        head = {f"4.{k}": v for k, v in model[4].state_dict().items()}
        torch.save({**lora.lora_state_dict(model), **head}, path)
        full_path = os.path.join(tmp, "full.pt")
        torch.save(model.state_dict(), full_path)
        print(f"checkpoint: LoRA + head {os.path.getsize(path):,} bytes vs full model "
              f"{os.path.getsize(full_path):,} bytes")
        fresh = make_model()  # same pretrained weights, fresh LoRA
        fresh.load_state_dict(torch.load(path, weights_only=True), strict=False)
    fresh.eval()
    with torch.no_grad():
        same = torch.allclose(fresh(x[:8]), reference, atol=1e-6)
    print(f"reloaded model gives the same outputs: {same}")
    if not same:
        raise SystemExit("reloaded outputs differ")


if __name__ == "__main__":
    main()
