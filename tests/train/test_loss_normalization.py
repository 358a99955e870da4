"""One optimizer step's loss is normalised by the label tokens of the whole global batch: the same gradients for
any split into accumulation steps (and processes: test_distributed.py), with or without packing.

Real parts: slices of the real E2E training pairs (their lengths vary), the real GPT-2 tokenizer, a tiny GPT-2.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import TINY_GPT2, gpt2_tokenizer, need, randomize_lora, shared_data, tiny_e2e_raw_config

import lorakit
from lorakit.train import distributed as D
from lorakit.train.batches import label_token_count
from lorakit.train.config import validate
from lorakit.train.loop import _forward_backward
from lorakit.train.tasks import get_task

E2E = shared_data() / "e2e"

@pytest.fixture(scope="module")
def e2e_items():
    task = get_task("e2e", label_smoothing=0.1)
    data = validate({"model": {"name_or_path": "x"}, "data": {"max_length": 96, "max_prompt_length": 48}}).data
    items = task.encode(task.load("train", need(E2E))[:8], gpt2_tokenizer(), data, training=True)[:8]
    return task, items


def _model():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(**{k: v for k, v in TINY_GPT2.items() if k != "model_type"}))
    lorakit.inject(model, lorakit.LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn"]))
    randomize_lora(model)
    return model.train()


def _step_grads(task, items, micro: int, packing: bool) -> tuple[float, dict[str, torch.Tensor]]:
    model = _model()
    data = validate({"model": {"name_or_path": "x"}, "task": {"name": "e2e"},
                     "data": {"max_length": 96, "packing": packing}}).data
    one = D.DistInfo(0, 1, 0, torch.device("cpu"))
    loss, _tokens = _forward_backward(model, task, items, micro, None, torch.amp.GradScaler("cuda", enabled=False),
                                      None, one, data)
    return loss, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_accumulation_and_packing_give_the_one_big_batch_token_mean(e2e_items):
    task, items = e2e_items
    lengths = [len(it["input_ids"]) for it in items]
    assert len(set(lengths)) > 3  # the real pairs vary in length: the case the old averaging got wrong

    # the reference: one padded batch of all 8 items, mean over all its completion tokens
    model = _model()
    batch = task.collate(items)
    reference = task.loss(model, batch)
    reference.backward()
    want = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    for micro, packing in ((8, False), (2, False), (2, True), (8, True)):
        loss, grads = _step_grads(task, items, micro, packing)
        assert loss == pytest.approx(reference.item(), rel=1e-5), (micro, packing)
        assert grads.keys() == want.keys() and any("lora_A" in n for n in grads)
        for name in want:
            torch.testing.assert_close(grads[name], want[name], rtol=1e-4, atol=1e-7, msg=f"{name} {micro} {packing}")

    # what the old loop computed with 4 micro-batches of 2, the mean of their means, has other gradients
    model.zero_grad(set_to_none=True)
    (sum(task.loss(model, task.collate(items[k:k + 2])) for k in range(0, 8, 2)) / 4).backward()
    old = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert max(float((old[n] - want[n]).abs().max() / want[n].abs().max()) for n in want) > 0.01


def test_label_tokens_are_counted_after_the_shift_with_label_smoothing_in_the_sum(e2e_items):
    task, items = e2e_items
    batch = task.collate(items[:3])
    n = label_token_count(batch)
    assert n == sum(sum(1 for t in it["labels"][1:] if t != -100) for it in items[:3])
    model = _model()
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    mean = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch["labels"][:, 1:].reshape(-1),
                           label_smoothing=0.1)
    torch.testing.assert_close(task.loss_sum(model, batch) / n, mean, rtol=1e-5, atol=1e-6)


def _e2e_config(**training):
    return tiny_e2e_raw_config(training={"batch_size": 8, "max_steps": 3, "checkpoint_every": 3, **training})


@pytest.mark.parametrize("variant", [{"training": {"grad_accumulation": 4}}, {"data": {"packing": True}}])
def test_training_with_accumulation_or_packing_ends_with_the_same_weights(tmp_path, kit, variant):
    kit.run(validate(_e2e_config()), tmp_path / "plain")
    raw = _e2e_config(**variant.get("training", {}))
    raw["data"].update(variant.get("data", {}))
    kit.run(validate(raw), tmp_path / "variant")
    plain, other = kit.tensors(tmp_path / "plain"), kit.tensors(tmp_path / "variant")
    assert plain.keys() == other.keys() and plain
    for key in plain:
        torch.testing.assert_close(other[key], plain[key], rtol=1e-4, atol=1e-6, msg=key)
