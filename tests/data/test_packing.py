"""Padding-free packing: per-example losses and LoRA gradients equal the padded batch's, on tiny GPT-2 and Llama
models with both CPU attention implementations; bad input is refused, naming the example and the setting."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import randomize_lora

import lorakit
from lorakit.data.packing import PackingError, forward_inputs, pack_batch, pack_rows
from lorakit.errors import LorakitError

VOCAB = 97


def _model(kind: str, attention: str):
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    if kind == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=VOCAB, n_positions=64,
                                           attn_implementation=attention, bos_token_id=0, eos_token_id=0,
                                           resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0))  # same masks
        targets = ["c_attn", "c_fc"]
    else:
        model = LlamaForCausalLM(LlamaConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=4,
                                             num_key_value_heads=2, intermediate_size=64, vocab_size=VOCAB,
                                             max_position_embeddings=64, attn_implementation=attention,
                                             bos_token_id=0, eos_token_id=0, pad_token_id=0))
        targets = ["q_proj", "v_proj", "down_proj"]
    lorakit.inject(model, lorakit.LoraConfig(r=4, lora_alpha=8, target_modules=targets))
    randomize_lora(model)
    return model.train()


def _padded_batch(lengths: list[int], prompt: int = 3) -> dict[str, torch.Tensor]:
    """Right-padded examples of ``lengths`` tokens; the first ``prompt`` tokens of each carry no label."""
    g = torch.Generator().manual_seed(1)
    width = max(lengths)
    ids = torch.randint(1, VOCAB, (len(lengths), width), generator=g)
    mask = (torch.arange(width) < torch.tensor(lengths)[:, None]).long()
    labels = torch.where(mask.bool(), ids, -100)
    labels[:, :prompt] = -100
    return {"input_ids": ids * mask, "attention_mask": mask, "labels": labels}


def _token_losses(model, batch) -> torch.Tensor:
    """(rows, seq - 1) next-token losses, 0 where nothing is scored."""
    logits = model(**forward_inputs(batch)).logits[:, :-1].float()
    return F.cross_entropy(logits.transpose(1, 2), batch["labels"][:, 1:], ignore_index=-100, reduction="none")


def test_rows_are_few_evenly_filled_and_hold_every_example_once():
    lengths = [5, 9, 3, 12, 7, 2]  # 38 tokens: first-fit decreasing into rows of 16 needs 3 rows (12+3, 9+7, 5+2)
    rows = pack_rows(lengths, 16)
    assert rows == [[3, 5], [0, 1], [2, 4]]  # 12+2, 5+9, 3+7: 3 rows no wider than 14 (13 would need 4)
    assert sorted(i for row in rows for i in row) == list(range(6))
    assert max(sum(lengths[i] for i in row) for row in rows) == 14
    assert pack_rows([4, 4, 4, 4], 16) == [[0, 1, 2, 3]]
    assert pack_rows([16, 16], 16) == [[0], [1]]
    assert pack_rows([10, 1, 1, 1, 1, 1, 1], 16) == [[0, 1, 2, 3, 4, 5, 6]]
    assert pack_rows([], 16) == []


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_packed_per_example_losses_and_lora_gradients_equal_the_padded_ones(kind, attention):
    lengths = [5, 9, 4, 12, 7, 6]
    padded = _padded_batch(lengths)
    packed = pack_batch(padded, row_length=16)
    rows = pack_rows(lengths, 16)
    width = max(sum(lengths[i] for i in row) for row in rows)
    assert packed["input_ids"].shape == (len(rows), width) and width <= 16 and "attention_mask" not in packed
    model = _model(kind, attention)

    unpacked_losses = _token_losses(model, padded)
    per_example = unpacked_losses.sum(1)  # (examples,)
    packed_losses = _token_losses(model, packed)
    for r, row in enumerate(rows):
        start = 0
        for i in row:
            n = lengths[i]
            got = packed_losses[r, start:start + n - 1].sum()  # the example's own next-token targets
            torch.testing.assert_close(got, per_example[i], rtol=1e-5, atol=1e-5)
            start += n
        assert start <= 16

    grads = []
    for batch in (padded, packed):
        model.zero_grad(set_to_none=True)
        _token_losses(model, batch).sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and any("lora_B" in n for n in grads[0])
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-4, atol=1e-6, msg=name)


def test_packing_without_position_ids_would_mix_examples():
    """The equality above rests on the restarting positions: dropping them changes the losses."""
    padded = _padded_batch([5, 9, 4, 12, 7, 6])
    packed = pack_batch(padded, row_length=16)
    model = _model("llama", "sdpa")
    with_positions = _token_losses(model, packed).sum()
    without = _token_losses(model, {k: v for k, v in packed.items() if k != "position_ids"}).sum()
    assert not torch.allclose(with_positions, without, rtol=1e-4)


def test_positions_restart_and_first_labels_and_the_tail_are_ignored():
    padded = _padded_batch([3, 2, 6], prompt=0)
    packed = pack_batch(padded, row_length=8)  # rows of 6: example 2; examples 0 + 1 and a tail of 1
    assert packed["position_ids"].tolist() == [[0, 1, 2, 3, 4, 5], [0, 1, 2, 0, 1, 0]]
    ids = padded["input_ids"]
    assert packed["input_ids"][1, :5].tolist() == ids[0, :3].tolist() + ids[1, :2].tolist()
    assert packed["labels"].tolist() == [[-100, *ids[2, 1:6].tolist()],
                                         [-100, *ids[0, 1:3].tolist(), -100, ids[1, 1].item(), -100]]


def test_an_example_longer_than_a_row_is_named_or_cut_when_truncate_says_so():
    padded = _padded_batch([5, 12, 4])
    with pytest.raises(PackingError, match=r"example 1 has 12 tokens.*data.max_length=8.*data.truncate") as err:
        pack_batch(padded, row_length=8)
    assert isinstance(err.value, LorakitError) and isinstance(err.value, ValueError)
    cut = pack_batch(padded, row_length=8, truncate=True)  # 5 + 8 + 4 tokens: rows of 8
    assert cut["input_ids"].shape[1] == 8
    assert int((cut["position_ids"] == 0).sum()) >= 3  # every example starts a segment
    assert padded["input_ids"].shape == (3, 12)  # the input batch is left as it was


def test_bad_batches_are_refused():
    padded = _padded_batch([3, 5])
    with pytest.raises(PackingError, match="lacks \\['labels'\\]"):
        pack_batch({k: v for k, v in padded.items() if k != "labels"}, 8)
    left = dict(padded, attention_mask=padded["attention_mask"].flip(1))
    with pytest.raises(PackingError, match="right-padded"):
        pack_batch(left, 8)
    with pytest.raises(PackingError, match="at least 1 token"):
        pack_rows([1], 0)
