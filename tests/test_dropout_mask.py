"""The regenerated dropout mask of the custom LoRA function: rate, independence, reproducibility.

Tests taking ``device`` run on the CPU in CI; ``pytest --device cuda`` checks the eager-GPU mask too.
"""

import pytest
import torch

from lorakit import functional as LF


@pytest.mark.parametrize("p", [0.05, 0.1, 0.5, 0.9])
def test_keep_rate_matches_the_quantized_probability(p, device):
    like = torch.empty(1000, 1000, device=device)
    keep = LF._keep_float(like, p, seed=12345)
    assert set(keep.unique().tolist()) <= {0.0, 1.0}
    expected = 1.0 - LF.quantized_dropout_p(p)
    # 1e6 Bernoulli draws: the standard error is below 5e-4, so 3e-3 is a > 6 sigma bound
    assert abs(keep.mean().item() - expected) < 3e-3


def test_mask_is_a_function_of_the_seed_only(device):
    like = torch.empty(64, 300, device=device)
    a = LF._keep_float(like, 0.3, seed=7)
    torch.testing.assert_close(a, LF._keep_float(torch.randn(64, 300, device=device), 0.3, seed=7))
    torch.testing.assert_close(a, LF._keep_float(like, 0.3, seed=torch.tensor(7)))  # the 0-dim tensor seed
    assert not torch.equal(a, LF._keep_float(like, 0.3, seed=8))


@pytest.mark.parametrize("seed_pair", [(1, 2), (2**40, 2**40 + 1), (5, 5 + 2**32)])
def test_masks_of_different_seeds_and_neighbouring_elements_are_uncorrelated(seed_pair, device):
    like = torch.empty(1 << 20, device=device)
    a, b = (LF._keep_float(like, 0.5, seed) for seed in seed_pair)
    # 2**20 samples: the correlation of independent masks has standard error ~1e-3
    assert abs(torch.corrcoef(torch.stack([a, b]))[0, 1].item()) < 6e-3
    for lag in (1, 2, 3):  # the two halves of one 32-bit word sit next to each other
        assert abs(torch.corrcoef(torch.stack([a[:-lag], a[lag:]]))[0, 1].item()) < 6e-3
    # not a shifted copy either (a counter hash keyed by addition would be)
    for shift in range(1, 9):
        assert not torch.equal(a[shift:shift + 4096], b[:4096])


def test_uniforms_cover_the_int16_range_evenly():
    u = LF._random_int16(1 << 20, seed=99, device=torch.device("cpu")).to(torch.float32)
    counts = torch.histc(u, bins=16, min=-32768, max=32767)
    expected = u.numel() / 16
    # chi-square with 15 degrees of freedom: 50 is far beyond the 0.9999 quantile (~42.6)
    assert ((counts - expected) ** 2 / expected).sum().item() < 50


def test_large_masks_use_a_fresh_key_per_chunk(monkeypatch):
    monkeypatch.setattr(LF, "_COUNTERS_PER_CHUNK", 1024)
    u = LF._random_int16(4 * 2048, seed=3, device=torch.device("cpu"))
    chunks = u.view(4, 2048)
    for i in range(1, 4):
        assert not torch.equal(chunks[0], chunks[i])
    monkeypatch.undo()
    torch.testing.assert_close(LF._random_int16(2048, seed=3, device=torch.device("cpu")), chunks[0])
