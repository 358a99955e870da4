"""The task interface: the shared padding helper, the registry, and the example of docs/tasks.md run end to end."""

from __future__ import annotations

import json
import re

import pytest
import torch

from lorakit.train.tasks import TASKS, get_task, task_from_config
from lorakit.train.tasks.base import TASK_REGISTRY, Task, cut_keep_last, pad, register_task


def test_pad_right_left_and_pairs():
    assert pad([[1, 2, 3], [4]], 0).tolist() == [[1, 2, 3], [4, 0, 0]]
    assert pad([[1, 2, 3], [4]], 9, left=True).tolist() == [[1, 2, 3], [9, 9, 4]]
    assert pad([[], [5]], -100).tolist() == [[-100], [5]]
    offsets = pad([[(0, 3), (4, 5)], [(1, 2)]], -1)  # (batch, seq, 2)
    assert offsets.shape == (2, 2, 2) and offsets[1].tolist() == [[1, 2], [-1, -1]]
    assert pad([torch.tensor([7, 8])], 0).dtype == torch.long


def test_cut_keep_last_keeps_the_final_special_token():
    assert list(cut_keep_last([101, 5, 6, 7, 102], 3)) == [101, 5, 102]
    assert list(cut_keep_last([101, 5, 102], None)) == [101, 5, 102]
    assert list(cut_keep_last([101, 102], 3)) == [101, 102]


def test_every_registered_task_is_a_task_with_the_defaults_filled_in():
    assert TASKS == tuple(TASK_REGISTRY) and len(TASKS) == 37
    for name in TASKS:
        task = get_task(name)
        assert isinstance(task, Task) and task.model_kind in ("classifier", "causal_lm", "masked_lm"), name
        assert task.main_metric in task.reported_metrics(), name
    with pytest.raises(ValueError, match="registered twice"):
        register_task("cola", lambda **_: None)
    with pytest.raises(ValueError, match="unknown task 'colaa'; known tasks: quickstart, cola"):
        get_task("colaa")


def test_a_task_missing_a_contract_method_cannot_be_made():
    class NoMetrics(Task):
        def load(self, split, data_dir): return []
        def encode(self, examples, tokenizer, cfg, training=False): return []
        def collate(self, items, max_length=None): return {}
        def loss(self, model, batch): return torch.zeros(())
        def predict(self, model, batch): return torch.zeros(0)

    with pytest.raises(TypeError, match="metrics"):
        NoMetrics()


def _docs_example(kit) -> str:
    text = (kit.REPO / "docs" / "tasks.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) == 1
    return blocks[0]


def test_the_docs_example_task_trains_and_evaluates(tmp_path, kit):
    code = _docs_example(kit)
    assert len(code.splitlines()) <= 60
    rows = [{"text": f"{word} day", "label": int(word in ("good", "great"))}
            for word in ("good", "bad", "great", "awful") * 8]
    for split in ("train", "dev"):
        (tmp_path / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    try:
        exec(compile(code, "docs/tasks.md", "exec"), {})  # registers jsonl_sentiment
        cfg = kit.tiny_config(tmp_path, task={"name": "jsonl_sentiment"})
        assert type(task_from_config(cfg)).__name__ == "JsonlSentiment"
        results = kit.run(cfg, tmp_path / "run")
    finally:
        TASK_REGISTRY.pop("jsonl_sentiment", None)
    assert results["steps"] == 8 and 0.0 <= results["final"]["acc"] <= 1.0
    with pytest.raises(Exception, match="task.name"):
        kit.tiny_config(tmp_path, task={"name": "jsonl_sentiment"})  # unregistered: the schema refuses it
