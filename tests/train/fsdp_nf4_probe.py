"""Run by tests/train/test_distributed.py under ``torchrun --nproc_per_node 2`` (gloo, CPU): LoRA on a 4-bit base
under FSDP2 ``fully_shard``: each process holds half of every layer's 4-bit codes, and the loss and every LoRA
gradient equal those of the same model in one process. Exits non-zero on any difference."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard

import lorakit
from lorakit import quant


class Blocks(nn.Module):
    def __init__(self, width: int = 256, depth: int = 2):
        super().__init__()
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width)) for _ in range(depth))
        self.head = nn.Linear(width, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.head(x)


def main() -> None:
    dist.init_process_group("gloo")
    torch.manual_seed(0)
    model = quant.quantize(Blocks(), skip=["head"])
    lorakit.inject(model, lorakit.LoraConfig(r=4, target_modules=r"blocks\.\d\.[02]", init_lora_weights=False))
    x = torch.randn(8, 256, generator=torch.Generator().manual_seed(1))
    whole_loss = model(x).square().sum()
    whole_loss.backward()
    whole = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad()
    packed_rows = model.blocks[0][0].base_layer.weight_packed.shape[0]

    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    for block in model.blocks:
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    codes = model.blocks[0][0].base_layer.weight_packed
    local = codes.to_local()
    assert local.shape[0] == packed_rows // 2 and local.dtype == torch.uint8, (local.shape, packed_rows)
    loss = model(x).square().sum()
    loss.backward()
    torch.testing.assert_close(loss, whole_loss)
    for name, param in model.named_parameters():
        if param.requires_grad:
            torch.testing.assert_close(param.grad.full_tensor(), whole[name], msg=name)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
