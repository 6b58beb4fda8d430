"""Models without editing the package: `torchvision.<name>` and a user's own nn.Module (docs/extending.md).

The walk-throughs of docs/extending.md are run as written: the model file and the config entries
are read from its code blocks, so the page and the tests cannot drift apart.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torchvision
import yaml
from conftest import lab_run, planned_counts

from cifarlab.config.schema import ConfigError
from cifarlab.config.validate import validate_config
from cifarlab.models import (
    build_model,
    count_parameters,
    head_of,
    load_head,
    load_trained,
    set_train_mode,
    weights_file,
)
from cifarlab.models.user import constructor_arguments
from cifarlab.training.features import main as features_main
from cifarlab.training.loop import save_model, train_run
from cifarlab.training.sampling import subset

ROOT = Path(__file__).resolve().parent.parent
CPU = torch.device("cpu")
TORCHVISION_MODEL = "torchvision.mobilenet_v3_small"  # not a built-in; 2.5M parameters, cheap at 32 px
MOBILENET_HEAD = 1024 * 10 + 10  # its classifier's last Linear, 1024 -> 10 classes


def walkthrough(title: str) -> tuple[str | None, dict]:
    """(the python block, the yaml block as a dict) of one section of docs/extending.md."""
    page = (ROOT / "docs" / "extending.md").read_text()
    section = page.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]
    blocks: dict[str, str] = {}
    for language, body in re.findall(r"```(\w+)\n(.*?)```", section, flags=re.S):
        lines = body.splitlines()
        indent = min(len(line) - len(line.lstrip()) for line in lines if line.strip())
        blocks.setdefault(language, "\n".join(line[indent:] for line in lines) + "\n")  # the first
    return blocks.get("python"), yaml.safe_load(blocks["yaml"])


USER_FILE, USER_RUN = walkthrough("Your own model file")
_, TORCHVISION_RUN = walkthrough("A torchvision model")


def frozen_run(**overrides) -> dict:
    """A mobilenet run that trains its head only (tests/conftest.py's `lab_run` + these settings)."""
    settings = {"name": "mobilenet", "model": TORCHVISION_MODEL, "freeze": "head", "epochs": 1}
    return lab_run(**{**settings, "batch_size": 50, "lr": 0.05, "seed": 1, **overrides})


def make_weights_file(model: str, seed: int = 7) -> torch.nn.Module:
    """An ImageNet-shaped state dict (1000 classes, as the real file) where torchvision looks for it."""
    torch.manual_seed(seed)
    imagenet_like = torchvision.models.get_model(model.removeprefix("torchvision."), weights=None)
    with torch.no_grad():
        imagenet_like.features[0][0].weight.normal_(0, 5)  # unlike any fresh initialisation
    path = weights_file(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(imagenet_like.state_dict(), path)
    return imagenet_like


# --- torchvision.<name>: weights, head, freeze, cached features -----------------------------


@pytest.mark.parametrize("pretrained", [False, True], ids=["random-weights", "weights-file"])
def test_a_torchvision_model_outside_the_built_ins_trains_on_cached_features(
    pretrained, tmp_path, monkeypatch, synthetic_data
):
    """mobilenet_v3_small as vgg16 and resnet18: ImageNet weights from torchvision's cache, a new
    head, a frozen backbone whose features are computed once; the head trains on them."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    if pretrained:
        assert weights_file(TORCHVISION_MODEL).name == "mobilenet_v3_small-047dcff4.pth"
        imagenet_like = make_weights_file(TORCHVISION_MODEL)
    run = frozen_run(pretrained=pretrained)
    data = {"train": subset(synthetic_data["train"], torch.arange(200)), "test": synthetic_data["test"]}
    for split, prepared in data.items():
        torch.save(prepared, tmp_path / f"{split}.pt")
    backbone = {k: run[k] for k in ("model", "pretrained", "seed", "image_size")}
    features_main(
        train_path=tmp_path / "train.pt", test_path=tmp_path / "test.pt", out_train=tmp_path / "f_train.pt",
        out_test=tmp_path / "f_test.pt", backbone=backbone, device="cpu",
    )  # fmt: skip
    cached = {s: torch.load(tmp_path / f"f_{s}.pt", weights_only=True) for s in ("train", "test")}
    assert cached["train"]["features"].shape == (200, 1024)  # the input of the replaced classifier

    result = train_run(run, data["train"], data["test"], device=CPU, lr=run["lr"], cached_features=cached)
    model = result["model"]
    assert result["params_trainable"] == MOBILENET_HEAD < result["params_total"]
    assert head_of(model) is model.classifier[3] and head_of(model).out_features == 10
    first_conv = model.features[0][0].weight
    if pretrained:
        assert torch.equal(first_conv, imagenet_like.features[0][0].weight)
    else:
        assert first_conv.abs().max() < 5  # torchvision's own initialisation, not the file's
    # The frozen backbone stays in eval mode, and the whole model predicts what the head did.
    set_train_mode(model)
    assert not model.training and head_of(model).training
    model.eval()
    images = data["test"]["images"][:20].float() / 255
    x = (images - data["test"]["mean"][:, None, None]) / data["test"]["std"][:, None, None]
    with torch.no_grad():
        torch.testing.assert_close(
            head_of(model)(cached["test"]["features"][:20]), model(x), atol=1e-4, rtol=1e-4
        )
    # model.pt keeps the head alone; loading it rebuilds the backbone from the run's weights (the
    # file in torchvision's cache, or the seeded initialisation) and gives back the same model
    save_model(result, tmp_path / "model.pt")
    saved = torch.load(tmp_path / "model.pt", weights_only=True)
    assert saved["model_part"] == "head" and set(saved["model_state"]) == {
        "classifier.3.weight",
        "classifier.3.bias",
    }
    loaded, _ = load_trained(tmp_path / "model.pt")
    assert all(
        torch.equal(a, b)
        for a, b in zip(loaded.state_dict().values(), model.state_dict().values(), strict=True)
    )
    head, _ = load_head(tmp_path / "model.pt")
    assert torch.equal(head.weight, head_of(model).weight) and torch.equal(head.bias, head_of(model).bias)


def test_a_torchvision_model_without_its_weights_file_offline_says_which_file_where(tmp_path, monkeypatch):
    import urllib.error

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network (test)")

    monkeypatch.setattr(torch.hub, "urlopen", offline)
    with pytest.raises(RuntimeError) as error:
        build_model(frozen_run(pretrained=True), 10)
    message = str(error.value)
    assert "mobilenet_v3_small-047dcff4.pth" in message and str(tmp_path / "hub" / "checkpoints") in message
    assert "pretrained=false" in message


def test_model_args_reach_torchvision_and_freeze_none_trains_everything():
    net = build_model(frozen_run(freeze="none", model_args={"dropout": 0.5}), 10)
    assert [m.p for m in net.modules() if isinstance(m, torch.nn.Dropout)] == [0.5]
    total, trainable = count_parameters(net)
    assert total == trainable


# --- a user's own nn.Module -----------------------------------------------------------------


def test_the_constructor_gets_num_classes_image_size_and_model_args(tmp_path, monkeypatch):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "wide_cnn.py").write_text(USER_FILE)
    monkeypatch.chdir(tmp_path)
    run = lab_run(**USER_RUN["wide_cnn"])
    net = build_model(run, 7)
    assert net.classifier.out_features == 7 and net.features[0].out_channels == 16  # width from model_args
    assert build_model(run, 7).state_dict()["classifier.weight"].equal(net.state_dict()["classifier.weight"])

    class NoSize(torch.nn.Module):
        def __init__(self, num_classes):
            super().__init__()

    assert constructor_arguments(NoSize, 3, 32, {}) == {"num_classes": 3}  # image_size only if taken
    with pytest.raises(TypeError, match=r"takes no \['depth'\]"):
        constructor_arguments(NoSize, 3, 32, {"depth": 2})
    with pytest.raises(TypeError, match="must not set"):
        constructor_arguments(NoSize, 3, 32, {"num_classes": 2})


@pytest.fixture()
def project_modules():
    """Forget the walk-through's `models` package afterwards: each test has its own project root."""
    yield
    for name in [n for n in sys.modules if n == "models" or n.startswith("models.")]:
        del sys.modules[name]


def test_the_model_file_the_workflow_tracks_for_a_path_and_for_a_module(
    tmp_path, monkeypatch, project_modules
):
    """The file that is an input of the runs: the path itself, a module's file under the project
    root; an installed package is not the project's (None)."""
    from cifarlab.models import model_source

    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "wide_cnn.py").write_text(USER_FILE)
    assert model_source("models/wide_cnn.py:WideCNN", tmp_path) == Path("models/wide_cnn.py")
    assert model_source("models.wide_cnn:WideCNN", tmp_path) == Path("models/wide_cnn.py")
    assert model_source("torch.nn:Linear", tmp_path) is None
    assert model_source(TORCHVISION_MODEL, tmp_path) is None
    monkeypatch.chdir(tmp_path)
    net = build_model(lab_run(model="models.wide_cnn:WideCNN", model_args={"width": 4}), 3)
    assert net.classifier.out_features == 3 and net.features[0].out_channels == 4


# --- config errors: the key and what exists --------------------------------------------------


@pytest.fixture()
def config() -> dict:
    with open(ROOT / "config" / "config.yaml") as f:
        return yaml.safe_load(f)


def _error(config: dict, root: Path = ROOT) -> str:
    with pytest.raises(ConfigError) as excinfo:
        validate_config(config, root)
    return str(excinfo.value)


def test_a_torchvision_model_that_does_not_exist_names_the_key_and_the_models(config):
    config["runs"]["mobilenet"] = {"model": "torchvision.mobilenet_v3_smal"}
    message = _error(config)
    assert "runs.mobilenet.model" in message and "'mobilenet_v3_smal'" in message
    # the nearest name first, then the list (cut short in a config error) and how to see all of it
    assert "did you mean mobilenet_v3_small" in message and "alexnet" in message
    assert "torchvision.models.list_models(module=torchvision.models)" in message
    config["runs"]["mobilenet"] = {"model": TORCHVISION_MODEL}
    runs = validate_config(config, ROOT)
    assert runs["mobilenet"]["freeze"] == "head" and runs["mobilenet"]["pretrained"] is True


def test_a_user_model_that_does_not_exist_names_the_key_and_what_exists(config, tmp_path, project_modules):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "wide_cnn.py").write_text(USER_FILE)
    config["runs"]["wide_cnn"] = copy.deepcopy(USER_RUN["wide_cnn"])
    assert validate_config(copy.deepcopy(config), tmp_path)["wide_cnn"]["freeze"] == "none"

    config["runs"]["wide_cnn"]["model"] = "models/wide.py:WideCNN"
    message = _error(config, tmp_path)
    assert (
        "runs.wide_cnn.model" in message and "'models/wide.py'" in message and "models/wide_cnn.py" in message
    )
    config["runs"]["wide_cnn"]["model"] = "nets/wide_cnn.py:WideCNN"
    assert "nets/ does not exist" in _error(config, tmp_path)
    config["runs"]["wide_cnn"]["model"] = "models/wide_cnn.py:WideCnn"
    message = _error(config, tmp_path)
    assert "runs.wide_cnn.model" in message and "'WideCnn'" in message and "['WideCNN']" in message
    config["runs"]["wide_cnn"]["model"] = "models.wide_cnn:WideCNN"  # the same file as a module
    assert validate_config(copy.deepcopy(config), tmp_path)["wide_cnn"]["model"] == "models.wide_cnn:WideCNN"
    config["runs"]["wide_cnn"]["model"] = "mynets.wide:WideCNN"
    message = _error(config, tmp_path)
    assert "runs.wide_cnn.model" in message and "no importable module 'mynets.wide'" in message
    config["runs"]["wide_cnn"]["model"] = "wide_cnn"
    message = _error(config, tmp_path)
    assert "runs.wide_cnn.model" in message and "simple_cnn" in message and "torchvision.<name>" in message
    for outside in (f"{tmp_path / 'models' / 'wide_cnn.py'}:WideCNN", "../elsewhere/wide_cnn.py:WideCNN"):
        config["runs"]["wide_cnn"]["model"] = outside
        message = _error(config, tmp_path)
        assert "runs.wide_cnn.model" in message and "outside the project root" in message, message


def test_model_args_of_a_built_in_model_and_freeze_head_of_a_user_model_are_refused(config, tmp_path):
    config["runs"]["vit"]["model_args"] = {"depth": 2}
    message = _error(config)
    assert "runs.vit.model_args" in message and "vit" in message
    del config["runs"]["vit"]["model_args"]
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "wide_cnn.py").write_text(USER_FILE)
    config["runs"]["wide_cnn"] = {**USER_RUN["wide_cnn"], "freeze": "head"}
    assert "runs.wide_cnn.freeze" in _error(config, tmp_path)


# --- through Snakemake: the two walk-throughs as one small study -----------------------------

WORKFLOW_PARTS = ("Snakefile", "workflow", "scripts", "config", "environment.yaml")


def snakemake(workdir: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "snakemake", *args, "--cores", "2"],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=1200,
        env=env,
    )


@pytest.fixture(scope="module")
def own_models_study(tmp_path_factory) -> tuple[Path, dict]:
    """A project with the walk-throughs' model file and runs as its whole study, run to its report.

    Tiny synthetic data, one epoch; the torchvision run starts from a weights file the fixture
    makes (pretrained: true, TORCH_HOME), the user's model also gets the LR finder and saliency.
    """
    import os

    workdir = tmp_path_factory.mktemp("own_models")
    for part in WORKFLOW_PARTS:
        source = ROOT / part
        (shutil.copytree if source.is_dir() else shutil.copy)(source, workdir / part)
    (workdir / "models").mkdir()
    (workdir / "models" / "wide_cnn.py").write_text(USER_FILE)
    study = yaml.safe_load(open(ROOT / "config" / "config.yaml"))
    study.update(
        dataset={
            "name": "synthetic", "source": "synthetic", "md5": None, "image_size": 32,
            "synthetic": {"seed": 0, "train_per_class": 30, "test_per_class": 10},
        },
        pretrained=True, threads=1,
        runs={**USER_RUN, **TORCHVISION_RUN},
        lr_finder={**study["lr_finder"], "runs": ["wide_cnn"], "num_iter": 20, "repeats": 1},
        saliency={"runs": ["wide_cnn"], "methods": ["vanilla", "gradcam"]},
    )  # fmt: skip
    study["defaults"].update(epochs=1, seeds=1)
    (workdir / "config" / "config.yaml").write_text(yaml.safe_dump(study, sort_keys=False))
    env = {**os.environ, "TORCH_HOME": str(workdir / "torch")}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TORCH_HOME", env["TORCH_HOME"])
        make_weights_file(TORCHVISION_MODEL)
    result = snakemake(workdir, "report", env=env)
    assert result.returncode == 0, result.stderr[-6000:]
    return workdir, env


@pytest.mark.slow
def test_a_user_model_file_and_a_torchvision_model_run_through_the_study(own_models_study):
    workdir, _ = own_models_study
    results = workdir / "results"
    runs = results / "synthetic" / "runs"  # cifarlab.core.paths.RUN, the one seed 0
    for name, model in (("wide_cnn", "models/wide_cnn.py:WideCNN"), ("mobilenet", TORCHVISION_MODEL)):
        metrics = json.loads((runs / name / "seed0" / "metrics.json").read_text())
        assert metrics["model"] == model and metrics["status"] == "ok", metrics
        assert 0 <= metrics["test_accuracy"] <= 100
    wide = json.loads((runs / "wide_cnn" / "seed0" / "metrics.json").read_text())
    assert wide["params_total"] == wide["params_trainable"] > 0 and wide["settings"]["model_args"] == {
        "width": 16
    }
    mobilenet = json.loads((runs / "mobilenet" / "seed0" / "metrics.json").read_text())
    assert mobilenet["pretrained"] is True and mobilenet["params_trainable"] == MOBILENET_HEAD
    # The frozen backbone's features were cached once, from the weights file.
    features = torch.load(
        results / "features" / "synthetic" / f"{TORCHVISION_MODEL}-imagenet-32" / "train.pt",
        weights_only=True,
    )
    assert features["features"].shape == (300, 1024) and features["backbone"]["pretrained"] is True
    assert (results / "synthetic" / "lr_finder" / "wide_cnn.json").exists()
    saliency = json.loads((results / "synthetic" / "saliency" / "wide_cnn.json").read_text())
    assert {"vanilla", "gradcam"} <= set(saliency["methods"])
    assert (results / "figures" / "synthetic" / "saliency" / "wide_cnn.png").stat().st_size > 0
    rows = (results / "report" / "metrics.csv").read_text().splitlines()
    # a row per seed, then the run's aggregate (seed "all"), in the study's order
    assert [row.split(",")[:3] for row in rows[1:]] == [
        ["synthetic", "wide_cnn", "0"], ["synthetic", "wide_cnn", "all"],
        ["synthetic", "mobilenet", "0"], ["synthetic", "mobilenet", "all"],
    ]  # fmt: skip
    summary = (results / "report" / "summary.md").read_text()
    assert "models/wide_cnn.py:WideCNN" in summary and TORCHVISION_MODEL in summary


@pytest.mark.slow
def test_editing_the_model_file_plans_its_runs_again(own_models_study):
    workdir, env = own_models_study
    assert "Nothing to be done" in (lambda r: r.stdout + r.stderr)(
        snakemake(workdir, "report", "-n", env=env)
    )
    time.sleep(1.1)  # a newer modification time than the outputs on any file system
    model_file = workdir / "models" / "wide_cnn.py"
    model_file.write_text(model_file.read_text().replace("width: int = 32", "width: int = 24"))
    plan = snakemake(workdir, "report", "-n", "--quiet", "rules", env=env)
    assert plan.returncode == 0, plan.stderr[-3000:]
    jobs = planned_counts(plan.stdout)
    # wide_cnn's train, LR sweep, evaluation and saliency; not mobilenet's (nor its features).
    assert jobs.get("train") == 1 and jobs.get("evaluate") == 1, jobs
    assert jobs.get("lr_find") == 1 and jobs.get("saliency") == 1 and "features" not in jobs, jobs
