"""Distillation's teacher scores: the teacher's own calibrated probabilities, in the student's label order, cached by
text so a second training run does not load the (large) teacher again."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from copilot.classifier import data as D
from copilot.classifier.inference import Classifier
from copilot.classifier.train import teacher_scores
from copilot.config import PROJECT_ROOT

SHIPPED = PROJECT_ROOT / "models" / "classifier"


def test_teacher_scores_are_the_teachers_probabilities_and_are_cached(tmp_path: Path) -> None:
    teacher = tmp_path / "teacher"
    teacher.mkdir()
    for f in SHIPPED.iterdir():  # the shipped model stands in for a bigger teacher (torch weights only)
        if f.is_file() and f.suffix != ".onnx" and f.name != "onnx_report.json":
            shutil.copy(f, teacher / f.name)
    texts = ["I will find where you live and hurt you", "lovely weather for a picnic", "buy cheap followers now click here"]
    rows = [D.Example(id=str(i), text=t, y=np.zeros(17, np.float32), mask=np.zeros(17, np.float32), weight=1.0, source="t", split="train")
            for i, t in enumerate(texts)]
    clf = Classifier(teacher, backend="torch")
    labels = ["spam", "harassment/threatening", "not-a-teacher-label"]
    got = teacher_scores(teacher, rows, labels)
    want = clf.predict_proba(texts)
    assert got.shape == (3, 3)
    np.testing.assert_allclose(got[:, 0], want[:, clf.labels.index("spam")], rtol=1e-5)
    np.testing.assert_allclose(got[:, 1], want[:, clf.labels.index("harassment/threatening")], rtol=1e-5)
    assert (got[:, 2] == 0).all()  # a label the teacher lacks teaches nothing
    assert got[0, 1] > 0.5 > got[1, 1] and got[2, 0] > got[1, 0]
    (teacher / "model.safetensors").unlink()  # a second run must not need the teacher's weights
    np.testing.assert_array_equal(teacher_scores(teacher, rows[::-1], labels), got[::-1])
