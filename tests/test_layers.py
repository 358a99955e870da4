"""lorakit's layers against loralib 0.1.2: parity where loralib is right, a pinned fix where it is not."""

from __future__ import annotations

import copy

import loralib
import pytest
import torch
from torch import nn

import lorakit
from lorakit import functional as LF

LIBS = {"lorakit": lorakit, "loralib": loralib}


def build(lib, kind: str, **kw):
    """One layer of ``kind`` from ``lib`` under a fixed seed, with a non-zero B so LoRA matters."""
    torch.manual_seed(0)
    specs = {
        "linear": lambda: lib.Linear(12, 10, r=4, lora_alpha=8, **kw),
        "linear_fifo": lambda: lib.Linear(12, 10, r=4, lora_alpha=8, fan_in_fan_out=True, **kw),
        "embedding": lambda: lib.Embedding(30, 10, r=4, lora_alpha=8, **kw),
        "merged_tft": lambda: lib.MergedLinear(
            12, 18, r=2, lora_alpha=4, enable_lora=[True, False, True], **kw
        ),
        "merged_ttt_fifo": lambda: lib.MergedLinear(
            12, 18, r=2, lora_alpha=4, enable_lora=[True, True, True], fan_in_fan_out=True, **kw
        ),
        "merged_ft": lambda: lib.MergedLinear(12, 10, r=3, lora_alpha=6, enable_lora=[False, True], **kw),
        "conv2d": lambda: lib.Conv2d(3, 6, 3, r=2, lora_alpha=4, padding=1, **kw),
        "conv1d_k1": lambda: lib.Conv1d(4, 6, 1, r=2, lora_alpha=4, **kw),
        "conv3d_k1": lambda: lib.Conv3d(2, 4, 1, r=2, lora_alpha=4, **kw),
    }
    layer = specs[kind]()
    with torch.no_grad():
        for name, p in layer.named_parameters():
            if "lora_B" in name or ("lora_A" in name and isinstance(layer, nn.Embedding)):
                p.normal_(0, 0.5, generator=torch.Generator().manual_seed(1))
    return layer


def example_input(kind: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(2)
    if kind == "embedding":
        return torch.randint(0, 30, (2, 5), generator=g)
    if kind == "conv2d":
        return torch.randn(2, 3, 7, 7, generator=g)
    if kind == "conv1d_k1":
        return torch.randn(2, 4, 9, generator=g)
    if kind == "conv3d_k1":
        return torch.randn(2, 2, 3, 4, 5, generator=g)
    return torch.randn(2, 5, 12, generator=g)


KINDS = ["linear", "linear_fifo", "embedding", "merged_tft", "merged_ttt_fifo", "merged_ft",
         "conv2d", "conv1d_k1", "conv3d_k1"]


# ----------------------------------------------------------------------------- parity with loralib
@pytest.mark.parametrize("kind", KINDS)
def test_same_parameters_and_outputs_as_loralib_in_train_and_eval(kind):
    ours, theirs = build(lorakit, kind), build(loralib, kind)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    for k, v in theirs.state_dict().items():
        assert torch.equal(ours.state_dict()[k], v), k
    x = example_input(kind)
    torch.testing.assert_close(ours(x), theirs(x))
    ours.eval()
    theirs.eval()
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_state_dicts_cross_load_both_ways_strictly(kind):
    ours, theirs = build(lorakit, kind), build(loralib, kind)
    x = example_input(kind)
    with torch.no_grad():  # give theirs different values, then move them across
        for p in theirs.parameters():
            p.add_(0.25)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    torch.testing.assert_close(ours(x), theirs(x))
    with torch.no_grad():
        for p in ours.parameters():
            p.mul_(1.5)
    theirs.load_state_dict(ours.state_dict(), strict=True)
    torch.testing.assert_close(ours(x), theirs(x))


def test_training_steps_match_loralib():
    ours, theirs = build(lorakit, "merged_tft"), build(loralib, "merged_tft")
    x = example_input("merged_tft")
    for layer in (ours, theirs):
        opt = torch.optim.SGD([p for p in layer.parameters() if p.requires_grad], lr=0.1)
        for _ in range(3):
            opt.zero_grad()
            layer(x).pow(2).mean().backward()
            opt.step()
    for k, v in theirs.state_dict().items():
        torch.testing.assert_close(ours.state_dict()[k], v)


def test_layers_built_with_a_device_keyword_put_every_tensor_there():
    layers = [lorakit.Linear(6, 9, r=2, device="meta"),
              lorakit.MergedLinear(6, 9, r=2, enable_lora=[True, False, True], device="meta")]
    for layer in layers:
        assert {t.device.type for t in [*layer.parameters(), *layer.buffers()]} == {"meta"}


def test_r_zero_is_a_plain_trainable_layer():
    layer = lorakit.Linear(6, 4, r=0)
    assert set(layer.state_dict()) == {"weight", "bias"}
    assert layer.weight.requires_grad
    x = torch.randn(3, 6)
    torch.testing.assert_close(layer(x), nn.functional.linear(x, layer.weight, layer.bias))


# ----------------------------------------------------------------------------- the custom function
def _fn_inputs(dtype=torch.float64, bias=True, device="cpu"):
    g = torch.Generator().manual_seed(3)
    mk = lambda *s: torch.randn(*s, generator=g, dtype=dtype).to(device).requires_grad_()  # noqa: E731
    return mk(2, 3, 5), mk(4, 5), (mk(4) if bias else None), mk(2, 5), mk(4, 2)


@pytest.mark.parametrize("p", [0.0, 0.3])
@pytest.mark.parametrize("bias", [True, False])
def test_gradcheck_custom_function_against_plain_formula(p, bias, device):
    x, w, b, a, bb = _fn_inputs(bias=bias, device=device)
    seed = 1234

    def ours(x, w, b, a, bb):
        return LF._LoraLinearFn.apply(x, w, b, a, bb, 1.7, p, seed)

    args = (x, w, b, a, bb) if bias else (x, w, None, a, bb)
    assert torch.autograd.gradcheck(ours, args)
    mask = LF._dropout_mask(x.detach().reshape(-1, 5), p, seed).view_as(x) if p else None
    ref = LF.lora_linear_reference(x, w, b, a, bb, 1.7, mask)
    torch.testing.assert_close(ours(*args), ref)
    grads = torch.autograd.grad(ours(*args).sum(), [t for t in args if t is not None])
    ref_grads = torch.autograd.grad(ref.sum(), [t for t in args if t is not None])
    for g1, g2 in zip(grads, ref_grads, strict=False):
        torch.testing.assert_close(g1, g2)


@pytest.mark.parametrize("bias", [True, False])
def test_inference_without_the_autograd_function_gives_the_same_output(bias, device):
    x, w, b, a, bb = (t.detach() for t in _fn_inputs(dtype=torch.float32, bias=True, device=device))
    b = b if bias else None
    with_grad = LF.lora_linear(x, w, b, a, bb, 1.7, dropout_p=0.3, training=False)
    for mode in (torch.no_grad, torch.inference_mode):
        with mode():
            torch.testing.assert_close(LF.lora_linear(x, w, b, a, bb, 1.7, dropout_p=0.3, training=False),
                                       with_grad, rtol=0, atol=0)
    torch.testing.assert_close(with_grad, LF.lora_linear_reference(x, w, b, a, bb, 1.7))


def test_dropout_is_applied_only_in_training_and_reproducible_from_the_seed():
    layer = lorakit.Linear(64, 64, r=8, lora_alpha=16, lora_dropout=0.5)
    nn.init.normal_(layer.lora_B)
    x = torch.randn(4, 64)
    torch.manual_seed(5)
    y1 = layer(x)
    torch.manual_seed(5)
    y2 = layer(x)
    torch.testing.assert_close(y1, y2)
    assert not torch.allclose(layer(x), y1)  # a different seed, a different mask
    layer.merge_weights = False
    layer.eval()
    torch.testing.assert_close(layer(x), layer(x))


def test_backward_keeps_no_dropped_copy_of_x_and_no_frozen_weight_grad():
    layer = lorakit.Linear(256, 256, r=8, lora_alpha=16, lora_dropout=0.1)
    layer.bias.requires_grad = False  # loralib's layers leave the bias trainable; freeze it here
    x = torch.randn(32, 256, requires_grad=True)
    saved = []

    def pack(t):
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = layer(x)
    x_sized = [t for t in saved if t.shape == x.shape]
    assert len(x_sized) == 1 and x_sized[0].data_ptr() == x.data_ptr()  # only x itself
    assert sum(t.numel() for t in saved if t.data_ptr() not in (x.data_ptr(), layer.weight.data_ptr(),
               layer.lora_A.data_ptr(), layer.lora_B.data_ptr())) == 32 * 8  # x A^T only
    y.sum().backward()
    assert layer.weight.grad is None and layer.bias.grad is None
    assert layer.lora_A.grad is not None and x.grad is not None


# ----------------------------------------------------------------------------- loralib's bugs
# Each check raises AssertionError (or the library's own error) when the bug is present; the test
# pins that it passes on lorakit and fails on loralib 0.1.2.
def bug1_state_dict_after_eval_is_unmerged(lib):
    torch.manual_seed(0)
    layer = lib.Linear(8, 8, r=2, lora_alpha=4)
    nn.init.normal_(layer.lora_B)
    x = torch.randn(3, 8)
    layer.eval()
    expected = layer(x)
    fresh = lib.Linear(8, 8, r=2, lora_alpha=4)
    fresh.load_state_dict(layer.state_dict())
    fresh.eval()
    torch.testing.assert_close(fresh(x), expected)
    # loading into an already-merged layer must also stay correct
    merged = lib.Linear(8, 8, r=2, lora_alpha=4).eval()
    merged.load_state_dict(layer.state_dict())
    torch.testing.assert_close(merged(x), expected)


def bug2_mark_only_lora_sets_lora_trainable(lib):
    model = nn.Sequential(lib.Linear(4, 4, r=2), nn.Linear(4, 2))
    for p in model.parameters():
        p.requires_grad = False
    lib.mark_only_lora_as_trainable(model)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"0.lora_A", "0.lora_B"}, trainable


def bug3_conv_any_kernel(lib):
    x1, x3 = torch.randn(2, 3, 11), torch.randn(1, 2, 5, 6, 7)
    c1 = lib.Conv1d(3, 4, 3, r=2, padding=1)
    c3 = lib.Conv3d(2, 4, 3, r=2, stride=2, dilation=1)
    c2 = lib.Conv2d(4, 6, (3, 5), r=2, groups=2, padding=(1, 2))
    for conv, x in ((c1, x1), (c3, x3), (c2, torch.randn(1, 4, 6, 8))):
        nn.init.normal_(conv.lora_B)
        reference = conv.conv._conv_forward(x, conv.conv.weight + conv.delta_weight(), conv.conv.bias)
        torch.testing.assert_close(conv(x), reference)
        assert set(conv.state_dict()) == {"conv.weight", "conv.bias", "lora_A", "lora_B"}


def bug4_merged_linear_all_disabled_and_mask_follows_device(lib):
    layer = lib.MergedLinear(6, 9, r=2, enable_lora=[False, False, False])
    x = torch.randn(2, 6)
    torch.testing.assert_close(layer(x), nn.functional.linear(x, layer.weight, layer.bias))
    enabled = lib.MergedLinear(6, 9, r=2, enable_lora=[True, False, True]).to("meta")
    assert enabled.lora_ind.device.type == "meta"


def bug5_lora_state_dict_skips_bias_buffers(lib):
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = lib.Linear(4, 4, r=2)
            self.register_buffer("bias", torch.tril(torch.ones(3, 3)))  # GPT-2-style mask

    sd = lib.lora_state_dict(Block(), bias="all")
    assert set(sd) == {"attn.lora_A", "attn.lora_B", "attn.bias"}, set(sd)


def bug6_no_drift_after_eval_train_cycles(lib, dtype=torch.bfloat16):
    torch.manual_seed(0)
    layer = lib.Linear(32, 32, r=4, lora_alpha=8).to(dtype)
    nn.init.normal_(layer.lora_B)
    original = layer.weight.detach().clone()
    for _ in range(20):
        layer.eval()
        layer.train()
    assert torch.equal(layer.weight, original)


def bug7_everything_follows_to(lib):
    layer = lib.MergedLinear(6, 9, r=2, enable_lora=[True, False, True])
    layer.to("meta")
    tensors = list(layer.parameters()) + [layer.lora_ind]
    assert all(t.device.type == "meta" for t in tensors)
    bf = lib.MergedLinear(6, 9, r=2, enable_lora=[True, False, True]).to(torch.bfloat16)
    assert bf(torch.randn(2, 6, dtype=torch.bfloat16)).dtype == torch.bfloat16


BUGS = [bug1_state_dict_after_eval_is_unmerged, bug2_mark_only_lora_sets_lora_trainable, bug3_conv_any_kernel,
        bug4_merged_linear_all_disabled_and_mask_follows_device, bug5_lora_state_dict_skips_bias_buffers,
        bug6_no_drift_after_eval_train_cycles, bug7_everything_follows_to]


@pytest.mark.parametrize("check", BUGS, ids=lambda f: f.__name__.split("_")[0])
def test_loralib_bug_is_fixed_in_lorakit(check):
    check(lorakit)


@pytest.mark.parametrize("check", BUGS, ids=lambda f: f.__name__.split("_")[0])
def test_loralib_bug_is_present_in_loralib(check):
    with pytest.raises((AssertionError, RuntimeError, AttributeError, TypeError, ValueError)):
        check(loralib)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_pretrained_weight_is_exact_after_cycles_in_half_precision(dtype):
    for kind in ("linear", "embedding", "merged_tft", "conv2d"):
        layer = build(lorakit, kind).to(dtype)
        before = copy.deepcopy(layer.state_dict())
        for _ in range(10):
            layer.eval()
            layer.train()
        for k, v in before.items():
            assert torch.equal(layer.state_dict()[k], v), (kind, k)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_modules_and_inputs_work_in_train_and_eval(kind, dtype):
    layer = build(lorakit, kind)
    x = example_input(kind)
    reference = layer(x)
    layer = layer.to(dtype)
    assert all(p.dtype == dtype for p in layer.parameters())
    xh = x if kind == "embedding" else x.to(dtype)
    y = layer(xh)
    assert y.dtype == dtype
    torch.testing.assert_close(y.float(), reference, rtol=0.05, atol=0.1)
    y.float().sum().backward()
    assert layer.lora_A.grad.dtype == dtype
    layer.eval()
    torch.testing.assert_close(layer(xh).float(), reference, rtol=0.05, atol=0.1)


def test_autocast_bf16_on_cpu_trains_fp32_lora_parameters():
    layer = build(lorakit, "linear")
    x = example_input("linear")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x)
    assert y.dtype == torch.bfloat16
    y.float().sum().backward()
    assert layer.lora_A.grad.dtype == torch.float32


# ----------------------------------------------------------------------------- merge behaviour
@pytest.mark.parametrize("kind", KINDS)
def test_eval_merges_with_equal_outputs_and_state_dict_stays_pretrained(kind):
    layer = build(lorakit, kind)
    x = example_input(kind)
    before = {k: v.clone() for k, v in layer.state_dict().items()}
    y_train = layer(x)
    layer.eval()
    assert layer.merged
    torch.testing.assert_close(layer(x), y_train, rtol=1e-5, atol=1e-5)
    for k, v in before.items():
        assert torch.equal(layer.state_dict()[k], v), k
    layer.train()
    assert not layer.merged and layer.merged_weight is None


def test_merge_weights_false_keeps_lora_path_in_eval():
    layer = lorakit.Linear(6, 4, r=2, merge_weights=False).eval()
    assert not layer.merged and layer.merged_weight is None


def test_merged_copy_costs_one_weight_tensor():
    layer = lorakit.Linear(64, 32, r=4).eval()
    assert layer.merged_weight.shape == layer.weight.shape
    assert layer.merged_weight.data_ptr() != layer.weight.data_ptr()


# ----------------------------------------------------------------------------- trainable/state helpers
def test_mark_only_lora_as_trainable_bias_modes():
    model = nn.Sequential(lorakit.Linear(4, 4, r=2), nn.Linear(4, 4), lorakit.Conv2d(2, 2, 3, r=1))
    lorakit.mark_only_lora_as_trainable(model, bias="lora_only")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"0.lora_A", "0.lora_B", "0.bias", "2.lora_A", "2.lora_B", "2.conv.bias"}
    lorakit.mark_only_lora_as_trainable(model, bias="all")
    assert {n for n, p in model.named_parameters() if p.requires_grad} == trainable | {"1.bias"}
    assert set(lorakit.lora_state_dict(model, bias="lora_only")) == trainable


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(r=-1), ["r", ">= 0"]),
        (dict(r=2.5), ["r", "integer"]),
        (dict(r=True), ["r", "integer"]),
        (dict(r=4, lora_alpha=0), ["lora_alpha", "> 0"]),
        (dict(r=4, lora_alpha=-2.0), ["lora_alpha"]),
        (dict(r=4, lora_dropout=1.0), ["lora_dropout", "[0, 1)"]),
        (dict(r=4, lora_dropout=-0.1), ["lora_dropout"]),
    ],
)
def test_bad_hyperparameters_raise_clear_errors(kwargs, words):
    with pytest.raises(ValueError) as err:
        lorakit.Linear(8, 8, **kwargs)
    assert all(w in str(err.value) for w in words), str(err.value)


def test_enable_lora_must_divide_out_features():
    with pytest.raises(ValueError, match="must divide out_features=10"):
        lorakit.MergedLinear(8, 10, r=2, enable_lora=[True, False, True])


def test_bias_mode_is_validated():
    with pytest.raises(ValueError, match="bias must be one of"):
        lorakit.mark_only_lora_as_trainable(nn.Linear(2, 2), bias="some")


def test_state_dict_with_wrong_shape_names_key_and_shapes_and_changes_nothing():
    layer = lorakit.Linear(8, 8, r=4)
    before = {k: v.clone() for k, v in layer.state_dict().items()}
    bad = lorakit.Linear(8, 8, r=2).state_dict()
    with pytest.raises(ValueError) as err:
        layer.load_state_dict(bad)
    msg = str(err.value)
    assert "'lora_A'" in msg and "(2, 8)" in msg and "(4, 8)" in msg
    for k, v in before.items():
        assert torch.equal(layer.state_dict()[k], v)
