"""bench/gpu_llm_check.py (issue 17's GPU check) on the CPU: the variants measure the same model, the verdicts
apply the target's limits, and skipped rows are reported with their reason."""

from __future__ import annotations

import pytest
import torch

from bench import gpu_llm_check as glc


def _args(*extra: str):
    return glc.parse_args(["--device", "cpu", "--tiny", "--layers", "1", "--seq", "32", "--vocab", "512",
                           "--warmup", "1", "--steps", "1", *extra])


@pytest.mark.parametrize("name", ["peft", "lorakit-fused-ckpt", "lorakit-fused-ckpt-nf4"])
def test_every_variant_starts_from_the_same_model_and_loss(name):
    reference = glc.worker(glc.BY_NAME["lorakit-fused"], _args())
    result = glc.worker(glc.BY_NAME[name], _args())
    assert result["tokens_per_s"] > 0 and len(result["times"]) == 1 and result["trainable"] > 0
    # LoRA starts as the identity (B = 0), so the warm-up loss is the base model's: equal unless the base is 4-bit
    tolerance = 2e-2 if glc.BY_NAME[name].nf4 else 1e-3
    assert result["first_loss"] == pytest.approx(reference["first_loss"], abs=tolerance)
    assert result["first_loss"] == pytest.approx(torch.log(torch.tensor(512.0)).item(), abs=0.5)


def test_a_peer_kernel_that_needs_cuda_is_skipped_with_the_reason_on_the_cpu():
    with pytest.raises(glc.Skip, match="CUDA|not import"):
        glc.worker(glc.BY_NAME["peft-ckpt-cce"], _args())
    assert glc._unavailable(glc.BY_NAME["peft-ckpt-cce"], torch.device("cpu")) is not None
    assert glc._unavailable(glc.BY_NAME["lorakit-fused-ckpt"], torch.device("cpu")) is None


def _row(tokens: float, peak: float) -> dict:
    return {"tokens_per_s": tokens, "step_s": 1.0, "peak_bytes": peak, "first_loss": 1.0, "times": [1.0],
            "adapter_dtypes": ["torch.bfloat16"]}


def test_verdicts_apply_1_3x_tokens_and_0_5x_memory_against_peft_plain():
    results = {"peft": _row(1000, 100), "lorakit-fused-ckpt": _row(1300, 50), "lorakit-fused": _row(1500, 51),
               "lorakit-fused-ckpt-nf4": {"variant": "lorakit-fused-ckpt-nf4", "skipped": "killed"},
               "peft-ckpt": _row(900, 90)}
    by_name = {v["variant"]: v for v in glc.verdicts(results)}
    assert set(by_name) == {"lorakit-fused-ckpt", "lorakit-fused"}
    assert by_name["lorakit-fused-ckpt"]["pass"] and by_name["lorakit-fused-ckpt"]["tokens_ratio"] == 1.3
    assert not by_name["lorakit-fused"]["pass"] and by_name["lorakit-fused"]["tokens_pass"]
    text = glc.report(results, _args(), "cmd", "abc")
    assert "| lorakit fused + ckpt + NF4 | skipped |" in text and "killed" in text
    assert "| lorakit fused + ckpt | 1.30x | PASS | 0.50x | PASS | PASS |" in text
    assert glc.verdicts({"lorakit-fused": _row(1, 1)}) == []  # no HF+PEFT row: no verdict
