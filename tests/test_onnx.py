"""model.onnx beside model.pt2 (cifarlab.training.export.export_onnx): where onnx is installed it
predicts what the evaluation predicted; where it is not, evaluate writes none, says so in one log
line and removes an older one."""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path

import pytest
from conftest import lab_run

from cifarlab.training import evaluate as evaluation
from cifarlab.training import export
from cifarlab.training import loop as training
from cifarlab.training.evaluate import confusion_matrix
from cifarlab.training.sampling import TEST_SUBSET_SEED, stratified_subset

RUN = lab_run(name="simple_cnn", epochs=3, batch_size=64, lr=3e-3, optimizer="adam", train_subset=1000,
              test_subset=300)  # fmt: skip


def train_and_evaluate(files: dict, folder: Path) -> dict:
    """One small trained model, evaluated with model.pt2 and model.onnx asked for in `folder`
    (fp32: the programs compute in fp32, and `auto` may choose bf16 on this CPU)."""
    training.main(
        train_path=files["train"], test_path=files["test"], model_path=folder / "model.pt",
        history_path=folder / "history.csv", run=RUN, device="cpu", threads=1, precision="fp32",
    )  # fmt: skip
    return evaluation.main(
        model_path=folder / "model.pt", history_path=folder / "history.csv", test_path=files["test"],
        metrics_path=folder / "metrics.json", dataset="synthetic", seed=RUN["seed"], device="cpu",
        exported_path=folder / "model.pt2", onnx_path=folder / "model.onnx", precision="fp32",
    )  # fmt: skip


def test_onnx_predicts_what_the_evaluation_did(tmp_path, synthetic_files, synthetic_data):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    onnxruntime = pytest.importorskip("onnxruntime")
    metrics = train_and_evaluate(synthetic_files, tmp_path)
    model = onnx.load(str(tmp_path / "model.onnx"))
    properties = {p.key: p.value for p in model.metadata_props}
    assert json.loads(properties[export.ONNX_CLASSES]) == metrics["classes"]

    test = synthetic_data["test"]
    index = stratified_subset(test["labels"], RUN["test_subset"], TEST_SUBSET_SEED)
    images, labels = test["images"][index], test["labels"][index]
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"))
    assert [i.name for i in session.get_inputs()] == ["images"]
    scores = session.run(None, {"images": images.numpy()})[0]  # uint8 in, float32 scores out
    assert scores.shape == (len(images), len(metrics["classes"])) and str(scores.dtype) == "float32"
    import torch

    # the same scores as model.pt2 (another runtime: float sums in another order), so the same
    # predictions as the evaluation wherever the top two scores are not a near tie
    program = torch.export.load(str(tmp_path / "model.pt2")).module()
    with torch.no_grad():
        expected = program(images)
    torch.testing.assert_close(torch.from_numpy(scores), expected, rtol=1e-4, atol=1e-4)
    top2 = expected.topk(2, dim=1).values
    clear = (top2[:, 0] - top2[:, 1]) > 1e-3
    predictions = torch.from_numpy(scores).argmax(1)
    assert clear.float().mean() > 0.9 and torch.equal(predictions[clear], expected.argmax(1)[clear])
    confusion = confusion_matrix(labels, expected.argmax(1), len(metrics["classes"]))
    assert confusion.tolist() == metrics["confusion_matrix"]


def test_without_onnx_no_file_and_one_log_line(tmp_path, synthetic_files, caplog, monkeypatch):
    (tmp_path / "model.onnx").write_text("an older training's")
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name in export.ONNX_PACKAGES else real_find_spec(name, *a),
    )
    with caplog.at_level(logging.INFO, logger="cifarlab.training.export"):
        train_and_evaluate(synthetic_files, tmp_path)
    assert (tmp_path / "model.pt2").exists() and not (tmp_path / "model.onnx").exists()
    lines = [r.getMessage() for r in caplog.records if r.name == "cifarlab.training.export"]
    assert (
        len(lines) == 1
        and "not installed" in lines[0]
        and lines[0].startswith(f"no {tmp_path / 'model.onnx'}")
    )
