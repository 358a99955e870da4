"""Method ``distill``: the loss against a hand computation, the student's size, a run from a teacher workdir,
and a teacher of another label space refused before anything is written."""

from __future__ import annotations

import math

import pytest
import torch

from lorakit.distill import DistillError, distillation_loss, keep_first_layers
from lorakit.errors import LorakitError
from lorakit.train.build import build_model
from lorakit.train.config import ConfigError
from lorakit.train.errors import TrainingError


def test_distillation_loss_equals_a_hand_computation():
    student = torch.tensor([[1.0, 0.0, -1.0], [0.5, 0.5, 2.0]])
    teacher = torch.tensor([[2.0, 1.0, 0.0], [0.0, 1.0, 1.0]])
    task_loss = torch.tensor(0.7)
    temperature, alpha = 2.0, 0.25
    kl = 0.0
    for s_row, t_row in zip(student.tolist(), teacher.tolist(), strict=True):
        zs = sum(math.exp(v / temperature) for v in s_row)
        zt = sum(math.exp(v / temperature) for v in t_row)
        for s, t in zip(s_row, t_row, strict=True):
            p_t, p_s = math.exp(t / temperature) / zt, math.exp(s / temperature) / zs
            kl += p_t * math.log(p_t / p_s)
    expected = (1 - alpha) * 0.7 + alpha * temperature ** 2 * kl / 2  # batchmean over 2 rows, T^2 scaling
    assert distillation_loss(student, teacher, task_loss, temperature, alpha).item() == pytest.approx(expected,
                                                                                                   rel=1e-6)
    # regression: mean squared distance to the teacher's scores
    got = distillation_loss(torch.tensor([[1.0], [3.0]]), torch.tensor([[2.0], [1.0]]), task_loss, 5.0, 0.5)
    assert got.item() == pytest.approx(0.5 * 0.7 + 0.5 * (1 + 4) / 2)


def test_student_keeps_the_first_layers(kit):
    cfg = kit.tiny_config(model={"architecture": {**kit.TINY_BERT, "num_hidden_layers": 3}})
    torch.manual_seed(0)
    model = build_model(cfg.model, 2)
    first = model.encoder.encoder.layer[0].attention.self.query.weight.detach().clone()
    full = sum(p.numel() for p in model.parameters())
    per_block = sum(p.numel() for p in model.encoder.encoder.layer[2].parameters())
    keep_first_layers(model, 1)
    assert len(model.encoder.encoder.layer) == 1 and model.encoder.config.num_hidden_layers == 1
    assert torch.equal(model.encoder.encoder.layer[0].attention.self.query.weight, first)
    assert sum(p.numel() for p in model.parameters()) == full - 2 * per_block
    with pytest.raises(DistillError, match=r"student_layers must be an integer in \[1, 1\]"):
        keep_first_layers(model, 2)


def test_distill_run_from_a_teacher_workdir_and_label_space_mismatch(tmp_path, kit, glue_data):
    arch3 = {**kit.TINY_BERT, "num_hidden_layers": 3}
    teacher_dir = tmp_path / "teacher"
    teacher_cfg = kit.tiny_config(model={"architecture": arch3}, method={"name": "full"}, training={"max_steps": 4},
                                  evaluation={"every": 4, "average_last": 1, "baseline": False})
    teacher_results = kit.run(teacher_cfg, teacher_dir)
    method = {"name": "distill", "teacher": str(teacher_dir), "student_layers": 1, "temperature": 2.0,
              "distill_alpha": 0.5}
    results = kit.run(kit.tiny_config(model={"architecture": arch3}, method=method, training={"max_steps": 4},
                                      evaluation={"every": 4, "average_last": 1, "baseline": False}),
                      tmp_path / "student")
    teacher = build_model(kit.tiny_config(model={"architecture": arch3}).model, 2)
    per_block = sum(p.numel() for p in teacher.encoder.encoder.layer[0].parameters())
    assert results["parameters"]["total"] == teacher_results["parameters"]["total"] - 2 * per_block
    assert results["method"] == "distill" and math.isfinite(results["final"]["acc"])

    # the teacher learned the quickstart task (classes); STS-B has 1 output
    stsb = kit.tiny_config(glue_data, task={"name": "stsb"}, model={"architecture": arch3}, method=method)
    workdir = tmp_path / "refused"
    with pytest.raises(TrainingError, match=r"predicts \d+ classes but task 'stsb' has 1 output \(regression\)") as err:
        kit.run(stsb, workdir)
    assert isinstance(err.value, LorakitError)
    assert not workdir.exists()


def test_distill_without_a_teacher_is_a_config_error(kit):
    with pytest.raises(ConfigError, match="distill needs a teacher"):
        kit.tiny_config(method={"name": "distill"})
