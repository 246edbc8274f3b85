"""The distillation loss, and the teacher's logits computed once per text and teacher run."""

import mlflow
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from devkit.mlflow_store import MlflowStore, tracking_uri
from distrinews.config import DistillConfig
from distrinews.errors import UserError
from distrinews.train.distillation import cached_logits, distillation_loss, update_cache

LABELS = ("World", "Sports", "Business", "Sci/Tech")


def logits_and_labels() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    return torch.randn(8, 4), torch.randint(0, 4, (8,)), torch.randn(8, 4)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_an_all_label_mix_is_the_cross_entropy(smoothing):
    student, labels, teacher = logits_and_labels()
    expected = F.cross_entropy(student, labels, label_smoothing=smoothing)
    all_labels = DistillConfig(distill_alpha=0.0)
    assert torch.equal(distillation_loss(student, labels, teacher, all_labels, smoothing), expected)
    # Without a teacher the soft term is off whatever the mix.
    assert torch.equal(
        distillation_loss(student, labels, None, DistillConfig(), smoothing), expected
    )


def test_the_soft_term_is_zero_when_the_student_matches_the_teacher_and_pulls_towards_it():
    student, labels, teacher = logits_and_labels()
    all_soft = DistillConfig(distill_alpha=1.0, distill_temperature=3.0)
    assert distillation_loss(teacher, labels, teacher, all_soft).item() == pytest.approx(
        0, abs=1e-6
    )
    student.requires_grad_(True)
    distillation_loss(student, labels, teacher, all_soft).backward()
    with torch.no_grad():  # a small step against the gradient moves towards the teacher
        closer = student - 0.1 * student.grad
    t = all_soft.distill_temperature

    def gap(x):
        return F.kl_div(
            F.log_softmax(x / t, -1),
            F.log_softmax(teacher / t, -1),
            log_target=True,
            reduction="batchmean",
        )

    assert gap(closer) < gap(student.detach())


@pytest.fixture()
def teacher_run(tmp_path):
    store = MlflowStore(tmp_path)
    with tracking_uri(store.uri):
        run_id = store.client.create_run(store.experiment("teachers")).info.run_id
        yield run_id


def test_the_teacher_runs_once_per_text_and_its_logits_come_back_in_order(teacher_run):
    ran: list[str] = []

    def teacher(texts: list[str]) -> np.ndarray:
        ran.extend(texts)
        return np.array([[len(t), 0, 1, 2] for t in texts], dtype=np.float32)

    texts = ["a", "bb", "ccc", "a"]  # a repeated text is run once
    assert update_cache(teacher_run, texts, LABELS, teacher) == 3
    assert update_cache(teacher_run, texts, LABELS, teacher) == 0  # all cached: not run again
    assert ran == ["a", "bb", "ccc"]
    # A later student with other rows runs the teacher on its new texts only.
    assert update_cache(teacher_run, ["bb", "dddd"], LABELS, teacher) == 1
    assert ran[-1] == "dddd"
    logits = cached_logits(teacher_run, ["dddd", "a", "ccc"], LABELS)
    assert logits[:, 0].tolist() == [4, 1, 3] and logits.dtype == np.float32
    listed = [a.path for a in mlflow.MlflowClient().list_artifacts(teacher_run, "distillation")]
    assert listed == ["distillation/teacher_logits.parquet"]


def test_a_teacher_of_other_classes_or_texts_it_never_saw_are_refused(teacher_run):
    update_cache(teacher_run, ["a"], LABELS, lambda texts: np.zeros((len(texts), 4)))
    with pytest.raises(UserError, match="the teacher predicts World, Sports, Business, Sci/Tech"):
        cached_logits(teacher_run, ["a"], ("neg", "neu", "pos", "mixed"))
    with pytest.raises(UserError, match="no logits for 1 of the 2 training texts"):
        cached_logits(teacher_run, ["a", "b"], LABELS)
