"""task: sft: JSONL prompt/completion pairs and chats, rendered with the real GPT-2 BPE tokenizer, without and
with a chat template; the loss only on completion / assistant tokens; malformed lines named by file and line;
a training run of the repository's Llama-architecture config on real E2E pairs written as JSONL."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from helpers import gpt2_tokenizer, need, shared_data

from lorakit.train.config import load_config, validate
from lorakit.train.tasks import DataError, get_task

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = ("{% for m in messages %}{{ '<|' + m['role'] + '|>\\n' + m['content'] + eos_token }}{% endfor %}"
            "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}")


def _data(max_length: int = 128, truncate: bool = False):
    return validate({"model": {"name_or_path": "x"}, "task": {"name": "sft"},
                     "data": {"max_length": max_length, "truncate": truncate}}).data


def _write(folder: Path, split: str, rows: list) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
    (folder / f"{split}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def chat_tokenizer():
    tok = gpt2_tokenizer()
    tok.chat_template = TEMPLATE
    return tok


def _labelled_text(tok, item) -> list[str]:
    """The decoded runs of labelled tokens."""
    runs, current = [], []
    for t, lab in zip(item["input_ids"], item["labels"], strict=True):
        if lab != -100:
            assert lab == t
            current.append(t)
        elif current:
            runs.append(tok.decode(current))
            current = []
    if current:
        runs.append(tok.decode(current))
    return runs


def test_a_pair_without_chat_template_trains_on_completion_and_eos(tmp_path):
    tok = gpt2_tokenizer()
    task = get_task("sft")
    folder = _write(tmp_path, "train", [{"prompt": "name[Alimentum] food[Chinese]\n", "completion": " A place."}])
    (item,) = task.encode(task.load("train", folder), tok, _data(), training=True)
    prompt = tok("name[Alimentum] food[Chinese]\n")["input_ids"]
    assert item["input_ids"][:len(prompt)] == prompt
    assert _labelled_text(tok, item) == [" A place.<|endoftext|>"]
    assert item["label"] == len(item["input_ids"]) - len(prompt)


def test_a_chat_is_rendered_by_the_template_with_loss_on_assistant_turns_only(tmp_path, chat_tokenizer):
    task = get_task("sft")
    chat = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"},
                         {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Name a food"},
                         {"role": "assistant", "content": "Rice, cooked."}]}
    pair = {"prompt": "Say yes", "completion": "Yes"}
    folder = _write(tmp_path, "train", [chat, pair])
    items = task.encode(task.load("train", folder), chat_tokenizer, _data(), training=True)
    rendered = chat_tokenizer.apply_chat_template(chat["messages"], tokenize=False)
    assert chat_tokenizer.decode(items[0]["input_ids"]) == rendered
    assert _labelled_text(chat_tokenizer, items[0]) == ["Hello!<|endoftext|>", "Rice, cooked.<|endoftext|>"]
    pair_text = "<|user|>\nSay yes<|endoftext|><|assistant|>\nYes<|endoftext|>"
    assert chat_tokenizer.decode(items[1]["input_ids"]) == pair_text
    assert _labelled_text(chat_tokenizer, items[1]) == ["Yes<|endoftext|>"]


@pytest.mark.parametrize(("line", "message"), [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
    (json.dumps({"prompt": "a"}), "expected string fields 'prompt' and 'completion'"),
    (json.dumps({"prompt": "a", "completion": "  "}), "the completion is empty"),
    (json.dumps({"messages": [{"role": "user"}]}), "'messages' must be a non-empty list"),
    (json.dumps({"messages": [{"role": "user", "content": "x"}]}), "no assistant message"),
    (json.dumps({"messages": [{"role": "assistant", "content": "x"}]}), "the conversation starts with an assistant"),
])
def test_a_malformed_line_stops_with_file_and_line(tmp_path, line, message):
    folder = _write(tmp_path, "train", [{"prompt": "fine", "completion": "ok"}, "", line])
    with pytest.raises(DataError, match=f"train.jsonl:3: {message}"):
        get_task("sft").load("train", folder)


def test_missing_file_and_chats_without_template_are_refused(tmp_path):
    task = get_task("sft")
    with pytest.raises(DataError, match=r"dev.jsonl: file not found"):
        task.load("dev", tmp_path)
    folder = _write(tmp_path, "train", [{"messages": [{"role": "user", "content": "a"},
                                                      {"role": "assistant", "content": "b"},
                                                      {"role": "user", "content": "c"},
                                                      {"role": "assistant", "content": "d"}]}])
    with pytest.raises(DataError, match=r"train.jsonl:1: a chat \('messages'\) needs a tokenizer with a chat template"):
        task.encode(task.load("train", folder), gpt2_tokenizer(), _data(), training=True)


def test_an_example_longer_than_max_length_is_named_or_cut_when_truncate_says_so(tmp_path):
    tok = gpt2_tokenizer()
    task = get_task("sft")
    folder = _write(tmp_path, "train", [{"prompt": "short", "completion": " yes"},
                                        {"prompt": "word " * 30, "completion": " and more words" * 5}])
    examples = task.load("train", folder)
    with pytest.raises(DataError, match=r"train.jsonl:2: \d+ tokens, more than data.max_length=24.*data.truncate"):
        task.encode(examples, tok, _data(24), training=True)
    with pytest.raises(DataError, match=r"train.jsonl:2: no completion token within data.max_length=24"):
        task.encode(examples, tok, _data(24, truncate=True), training=True)
    items = task.encode(examples, tok, _data(40, truncate=True), training=True)
    assert len(items[1]["input_ids"]) == 40 and items[1]["label"] == 40 - 31  # 31 prompt tokens, 9 completion


def _e2e_jsonl(folder: Path, n_train: int, n_dev: int) -> Path:
    with open(need(shared_data() / "e2e" / "trainset.csv"), encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))[:n_train + n_dev]
    pairs = [{"prompt": r["mr"] + "\n", "completion": " " + r["ref"]} for r in rows]
    _write(folder, "train", pairs[:n_train])
    return _write(folder, "dev", pairs[n_train:])


def test_the_llama_config_trains_packed_on_real_e2e_pairs(tmp_path, kit):
    folder = _e2e_jsonl(tmp_path / "data", 32, 8)
    cfg = load_config(REPO / "configs" / "sft" / "tiny_llama_lora.json", [
        f"model.tokenizer={need(shared_data() / 'gpt2-vocab')}", f"data.dir={folder}", "data.max_length=128",
        "training.batch_size=8", "training.max_steps=6", "training.checkpoint_every=6", "optimizer.lr=0.01",
        "schedule.warmup_ratio=0", "evaluation.every=6", "evaluation.batch_size=8", "logging.progress_bar=false",
        "logging.tensorboard=false", "logging.plots=false", "model.architecture.hidden_size=32",
        "model.architecture.intermediate_size=64"])
    assert cfg.data.packing and cfg.training.gradient_checkpointing == "offload"
    results = kit.run(cfg, tmp_path / "run")
    assert results["task"] == "sft" and results["main_metric"] == "loss"
    assert results["final"]["loss"] < results["baseline"]["loss"]  # it learns
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").is_file()
