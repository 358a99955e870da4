"""Masked-LM fine-tuning: BERT masking statistics on the real MiniLM tokenizer's output, masks as a function of
(seed, step), the masked-token loss and bpc against a hand computation on a tiny BERT, the tied head built for
the real headless MiniLM encoder, a short end-to-end run, and bad input (no mask token, missing corpus)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from helpers import gpt2_tokenizer, minilm_folder, minilm_tokenizer, need, shared_data

from lorakit.train.tasks import DataError, get_task
from lorakit.train.tasks.mlm import mask_generator, mask_tokens

WIKITEXT = shared_data() / "wikitext-2"
LN2 = math.log(2.0)


@pytest.fixture(scope="module")
def btok():
    return minilm_tokenizer()


@pytest.fixture(scope="module")
def valid_text():
    return need(WIKITEXT / "valid.txt").read_text(encoding="utf-8")[:40_000]


def _encode(task, btok, text, training, max_length=64):
    from lorakit.train.tasks.lm import Segment

    return task.encode([Segment(text)], btok, SimpleNamespace(max_length=max_length), training=training)


def test_masking_statistics_follow_bert_15_percent_and_80_10_10(btok, valid_text):
    task = get_task("mlm_wikitext", seed=3)
    items = _encode(task, btok, valid_text, training=True)
    chosen = masked = swapped = kept = maskable = 0
    for step in range(0, len(items), 16):
        task.start_step(step)
        batch = task.collate(items[step:step + 16])
        originals = torch.nn.utils.rnn.pad_sequence([it["input_ids"] for it in items[step:step + 16]],
                                                    batch_first=True, padding_value=btok.pad_token_id)
        special = torch.isin(originals, torch.tensor(btok.all_special_ids))
        target = batch["labels"] != -100
        assert not (target & special).any()  # [CLS], [SEP] and padding are never targets
        assert torch.equal(batch["labels"][target], originals[target])
        maskable += int((~special).sum())
        chosen += int(target.sum())
        masked += int((batch["input_ids"][target] == btok.mask_token_id).sum())
        kept += int((batch["input_ids"][target] == originals[target]).sum())
        swapped += int(((batch["input_ids"] != originals) & target & (batch["input_ids"] != btok.mask_token_id)).sum())
    assert maskable > 8000
    assert abs(chosen / maskable - 0.15) < 0.01
    assert abs(masked / chosen - 0.8) < 0.03
    assert abs(swapped / chosen - 0.1) < 0.02
    assert abs(kept / chosen - 0.1) < 0.02  # a random id equal to the original counts as kept (p ~ 3e-5)


def test_masks_are_a_function_of_seed_and_step_so_resume_repeats_them(btok, valid_text):
    items = _encode(get_task("mlm_wikitext"), btok, valid_text, training=True)[:8]
    first = get_task("mlm_wikitext", seed=5)
    _encode(first, btok, valid_text[:2000], training=True)
    for step in range(3):  # a run that went through steps 0..2
        first.start_step(step)
        first.collate(items)
    first.start_step(3)
    uninterrupted = first.collate(items)
    resumed = get_task("mlm_wikitext", seed=5)  # a fresh process resuming at step 3
    _encode(resumed, btok, valid_text[:2000], training=True)
    resumed.start_step(3)
    assert torch.equal(resumed.collate(items)["input_ids"], uninterrupted["input_ids"])
    resumed.start_step(3)  # micro-batches (gradient accumulation) draw the same masks as the whole batch
    halves = [resumed.collate(items[:4])["labels"], resumed.collate(items[4:])["labels"]]
    assert torch.equal(torch.cat(halves), uninterrupted["labels"])
    resumed.start_step(4)
    assert not torch.equal(resumed.collate(items)["labels"], uninterrupted["labels"])
    other_seed = get_task("mlm_wikitext", seed=6)
    _encode(other_seed, btok, valid_text[:2000], training=True)
    other_seed.start_step(3)
    assert not torch.equal(other_seed.collate(items)["labels"], uninterrupted["labels"])
    state = torch.get_rng_state()
    torch.manual_seed(123)  # the global RNG plays no part
    other = mask_tokens(items[0]["input_ids"], torch.ones(len(items[0]["input_ids"]), dtype=torch.bool),
                        mask_generator(1, 2), 103, 30522)
    torch.manual_seed(999)
    again = mask_tokens(items[0]["input_ids"], torch.ones(len(items[0]["input_ids"]), dtype=torch.bool),
                        mask_generator(1, 2), 103, 30522)
    torch.set_rng_state(state)
    assert all(torch.equal(a, b) for a, b in zip(other, again, strict=True))


def test_processes_draw_different_masks_for_their_rows_and_together_those_of_one_process(btok, valid_text):
    """Under DDP each process collates its own slice of the global batch: the mask key is the row of the global
    batch (start_step's first_row = rank x rows per process), so rank 0 and rank 1 draw different masks for the
    same items, and the two ranks together draw what one process draws for the whole batch."""
    items = _encode(get_task("mlm_wikitext"), btok, valid_text, training=True)[:8]
    task = get_task("mlm_wikitext", seed=5)
    _encode(task, btok, valid_text[:2000], training=True)
    task.start_step(3)
    single = task.collate(items)  # one process, global batch of 8
    task.start_step(3, first_row=0)
    rank0 = task.collate(items[:4])
    task.start_step(3, first_row=4)
    rank1 = task.collate(items[4:])
    for key in ("input_ids", "labels"):
        assert torch.equal(torch.cat([rank0[key], rank1[key]]), single[key])
    task.start_step(3, first_row=4)  # rank 1 given rank 0's items: other masks (the bug was equal ones)
    same_items_rank1 = task.collate(items[:4])
    assert not torch.equal(same_items_rank1["labels"], rank0["labels"])
    task.start_step(3, first_row=4)  # and the same rank at the same step again: the same masks (resume)
    assert torch.equal(task.collate(items[:4])["labels"], same_items_rank1["labels"])


def _tiny_mlm(vocab_size=30522):
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=64, initializer_range=0.2,
                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return BertForMaskedLM(cfg).eval()


def test_masked_token_loss_and_bpc_equal_a_hand_computation(btok, valid_text):
    text = valid_text[:3000]
    task, model = get_task("mlm_wikitext", seed=0), _tiny_mlm()
    items = _encode(task, btok, text, training=False)
    batch = task.collate(items)
    # evaluation masks: every chosen token is [MASK]
    target = batch["labels"] != -100
    assert (batch["input_ids"][target] == btok.mask_token_id).all()
    # by hand: log-softmax at every masked position; characters from the tokenizer's offsets
    ids = btok(text, add_special_tokens=False, return_offsets_mapping=True)
    ends = [e for _, e in ids["offset_mapping"]]
    ends[-1] = len(text)  # trailing characters belong to the last token
    chars = [b - a for a, b in zip([0] + ends[:-1], ends, strict=True)]
    body = 64 - 2
    nll, n_chars, n_tokens = 0.0, 0, 0
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    for row in range(len(items)):
        for pos in target[row].nonzero().flatten().tolist():
            token = row * body + pos - 1  # the position in the text's tokens ([CLS] first)
            assert batch["labels"][row, pos] == ids["input_ids"][token]
            nll -= float(torch.log_softmax(logits[row, pos].double(), -1)[batch["labels"][row, pos]])
            n_chars += chars[token]
            n_tokens += 1
    metrics = task.metrics(task.predict(model, batch), [it["label"] for it in items])
    assert metrics["bpc"] == pytest.approx(nll / LN2 / n_chars, rel=1e-5)
    assert metrics["ppl"] == pytest.approx(math.exp(nll / n_tokens), rel=1e-5)
    assert math.isfinite(metrics["word_ppl"]) and metrics["bpb"] <= metrics["bpc"] + 1e-9  # ASCII-heavy text
    with torch.no_grad():
        loss = task.loss(model, batch)
    assert float(loss) == pytest.approx(nll / n_tokens, rel=1e-5)
    flat = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch["labels"].reshape(-1), ignore_index=-100)
    assert float(loss) == pytest.approx(float(flat), rel=1e-6)
    # what the training loop calls (lorakit.train.batches): the masked targets' sum and count, no causal shift
    from lorakit.train import batches as B

    assert B.loss_count(task, batch) == n_tokens
    with torch.no_grad():
        assert float(B.loss_sum(task, model, batch)) == pytest.approx(nll, rel=1e-5)


def test_headless_minilm_gets_a_tied_head_that_trains_with_lora_and_a_note():
    from lorakit.train.build import apply_configured_method, build_model
    from lorakit.train.config import validate

    cfg = validate({"model": {"name_or_path": str(minilm_folder())}, "task": {"name": "mlm_wikitext"},
                    "method": {"name": "lora", "r": 4, "target_modules": ["query", "value"]}})
    model = build_model(cfg.model, 0, "masked_lm")
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    assert model.lorakit_new_head == ["cls.predictions.transform.LayerNorm", "cls.predictions.transform.dense"]
    assert "no masked-LM head" in model.lorakit_load_notes[0] and "tied to the word embeddings" in \
        model.lorakit_load_notes[0]
    apply_configured_method(model, cfg)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any("transform.dense" in n for n in trainable) and any("lora_A" in n for n in trainable)
    assert not model.get_input_embeddings().weight.requires_grad


def test_mlm_run_end_to_end_reports_masked_token_metrics(tmp_path, kit):
    notes = []
    from lorakit.train.loop import train

    cfg = kit.tiny_config(WIKITEXT, task={"name": "mlm_wikitext"},
                          data={"max_length": 32, "max_train_examples": 20, "max_eval_examples": 5,
                                "random_length": [16, 32], "train_split": "valid", "eval_split": "test"},
                          training={"max_steps": 4, "checkpoint_every": 2, "batch_size": 4},
                          evaluation={"every": 2, "average_last": 1, "batch_size": 8, "metric": "bpc"})
    results = train(cfg, tmp_path / "run", echo=notes.append)
    metrics = results["final"]
    assert {"bpc", "ppl", "word_ppl"} <= set(metrics) and 0 < metrics["bpc"] < 30
    assert results["task"] == "mlm_wikitext" and results["steps"] == 4


def test_mlm_adapter_loads_back_with_peft_on_the_masked_lm_with_equal_outputs(tmp_path, kit):
    """A masked-LM LoRA run of the real (headless) MiniLM: its adapter_config.json has no CAUSAL_LM task_type
    (PeftModelForCausalLM cannot wrap BertForMaskedLM), and PeftModel.from_pretrained on
    AutoModelForMaskedLM gives the run's own logits, the new head's transform coming from modules_to_save."""
    import json

    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForMaskedLM

    from lorakit.train.config import validate
    from lorakit.train.finished_run import load_run

    raw = kit.tiny_raw_config(WIKITEXT, task={"name": "mlm_wikitext"},
                              data={"max_length": 32, "max_train_examples": 8, "max_eval_examples": 2,
                                    "train_split": "valid", "eval_split": "test"},
                              training={"max_steps": 2, "checkpoint_every": 2, "keep_last": 1, "batch_size": 4},
                              evaluation={"every": 100, "average_last": 1, "batch_size": 4, "metric": "bpc",
                                          "baseline": False})
    raw["model"] = {"name_or_path": str(minilm_folder())}
    cfg = validate(raw)
    kit.run(cfg, tmp_path / "run")
    adapter = tmp_path / "run" / "adapter"
    saved = json.loads((adapter / "adapter_config.json").read_text())
    assert saved["task_type"] is None  # PEFT has no masked-LM type; see build.PEFT_TASK_TYPES
    assert saved["modules_to_save"] == ["cls.predictions.transform.LayerNorm", "cls.predictions.transform.dense"]
    assert any("lora_B" in k and v.abs().max() > 0 for k, v in load_file(adapter / "adapter_model.safetensors").items())

    ours = load_run(cfg, tmp_path / "run", None, None, None, with_data=False).model.eval()
    torch.manual_seed(99)  # PEFT's base draws its own random transform: modules_to_save must replace it
    peft_model = PeftModel.from_pretrained(AutoModelForMaskedLM.from_pretrained(str(minilm_folder())),
                                           str(adapter)).eval()
    assert type(peft_model) is PeftModel
    ids = minilm_tokenizer()(["the cat sat on the [MASK] .", "lorakit trains a masked [MASK] model"],
                             padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = ours(**ids).logits
        got = peft_model(**ids).logits
        with peft_model.disable_adapter():
            base = peft_model(**ids).logits
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    assert (base - expected).abs().max() > 1e-2  # the adapter matters


def test_mlm_on_a_tokenizer_without_a_mask_token_is_refused_by_name(valid_text):
    with pytest.raises(DataError, match="no mask token") as err:
        _encode(get_task("mlm_wikitext"), gpt2_tokenizer(), valid_text[:500], training=True)
    assert isinstance(err.value, ValueError) and "GPT2" in str(err.value)


def test_missing_corpus_file_is_a_clear_data_error(tmp_path):
    with pytest.raises(DataError, match="enwik9"):
        get_task("mlm_hutter").load("train", tmp_path)
    with pytest.raises(DataError, match=str(tmp_path)):
        get_task("mlm_wikitext103").load("valid", tmp_path)


def test_lm_corpora_from_a_local_zip_are_checked_and_a_missing_file_is_named(tmp_path):
    import zipfile

    from lorakit.data.prepare import PrepareError, prepare

    text = need(WIKITEXT / "valid.txt").read_text(encoding="utf-8")[:5000]
    archive = tmp_path / "wikitext-103-v1.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for split in ("train", "valid", "test"):
            zf.writestr(f"wikitext-103/wiki.{split}.tokens", text)
    # WikiText-103's files are pinned: a zip of other text is refused, and nothing is written
    with pytest.raises(PrepareError, match=r"wiki.train.tokens: checksum mismatch \(sha1 [0-9a-f]{40}, sha256 "
                                           r"[0-9a-f]{64}; expected sha1:b7497e2d"):
        prepare("wikitext103", tmp_path / "data", archive, say=print)
    assert not (tmp_path / "data").exists()
    folder = tmp_path / "wikitext-103"  # the layout prepare writes, which the task reads
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(tmp_path)
    assert len(get_task("mlm_wikitext103").load("valid", folder)) > 10
    with zipfile.ZipFile(tmp_path / "wrong.zip", "w") as zf:
        zf.writestr("enwik9.txt", "not the file")
    with pytest.raises(PrepareError, match="enwik9 not found"):
        prepare("hutter", tmp_path / "data2", tmp_path / "wrong.zip", say=print)
    assert not (tmp_path / "data2" / "hutter" / "enwik9").exists()
