"""The model registry: the lab's parameter counts, freezing, seeding and ImageNet weights."""

from __future__ import annotations

import urllib.error

import pytest
import torch
import torchvision
from conftest import lab_run, schema_vit_defaults
from torch import nn

from cifarlab.models import (
    BUILTIN,
    build_model,
    count_parameters,
    head_of,
    set_train_mode,
    weights_file,
)


def run_settings(model: str, **overrides) -> dict:
    """A complete run of `model` (tests/conftest.py's `lab_run`), a ViT small enough for a test."""
    small = {"patch_size": 8, "dim": 32, "depth": 1, "heads": 2, "mlp_dim": 64}
    small_vit = {"vit": {**schema_vit_defaults(), **small}}
    return lab_run(model=model, **{**(small_vit if model == "vit" else {}), **overrides})


@pytest.mark.parametrize(("model", "expected"), [("simple_cnn", 62_006), ("dropout_cnn", 4_746_186)])
def test_lab_parameter_counts(model, expected):
    total, trainable = count_parameters(build_model(run_settings(model), 10))
    assert (total, trainable) == (expected, expected)


@pytest.mark.parametrize("model", sorted(BUILTIN))
@pytest.mark.parametrize("size", [32, 48])
def test_every_model_maps_images_to_class_scores(model, size):
    net = build_model(run_settings(model, image_size=size), num_classes=7).eval()
    with torch.no_grad():
        out = net(torch.randn(2, 3, size, size))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()
    # Activations are modules, so captum's guided backprop can hook them.
    assert any(isinstance(m, nn.ReLU | nn.LeakyReLU | nn.GELU) for m in net.modules())


def test_simple_cnn_outputs_log_probabilities_through_a_module():
    net = build_model(run_settings("simple_cnn"), 10).eval()
    assert isinstance(net.log_softmax, nn.LogSoftmax)
    with torch.no_grad():
        out = net(torch.randn(4, 3, 32, 32))
    torch.testing.assert_close(out.exp().sum(1), torch.ones(4))
    # Swapping the module for Identity gives logits (what saliency does).
    net.log_softmax = nn.Identity()
    with torch.no_grad():
        logits = net(torch.randn(4, 3, 32, 32))
    assert not torch.allclose(logits.exp().sum(1), torch.ones(4))


def test_dropout_p_reaches_the_layers():
    net = build_model(run_settings("dropout_cnn", dropout=0.3), 10)
    ps = [m.p for m in net.modules() if isinstance(m, nn.Dropout)]
    assert ps == [0.3, 0.3]


@pytest.mark.parametrize(("model", "head_params"), [("resnet18", 512 * 10 + 10), ("vgg16", 4096 * 10 + 10)])
def test_freeze_head_trains_only_the_new_last_layer(model, head_params):
    frozen = build_model(run_settings(model, freeze="head"), 10)
    total, trainable = count_parameters(frozen)
    assert trainable == head_params < total
    assert head_of(frozen).out_features == 10
    # The frozen backbone stays in eval mode (batch-norm statistics fixed) while the head trains.
    set_train_mode(frozen)
    assert not frozen.training and head_of(frozen).training
    full = build_model(run_settings(model, freeze="none"), 10)
    assert count_parameters(full) == (total, total)
    set_train_mode(full)
    assert all(m.training for m in full.modules())


def test_construction_is_seeded_and_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    a = build_model(run_settings("simple_cnn", seed=1), 10)
    assert torch.equal(torch.rand(1), expected_next)
    b = build_model(run_settings("simple_cnn", seed=1), 10)
    c = build_model(run_settings("simple_cnn", seed=2), 10)
    assert all(
        torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )
    assert not torch.equal(a.features[0].weight, c.features[0].weight)


def test_vit_patch_size_must_divide_the_image():
    with pytest.raises(ValueError, match="not a multiple of patch_size"):
        build_model(run_settings("vit", image_size=30), 10)


def test_unknown_model_is_named():
    with pytest.raises(ValueError, match="unknown model 'lenet'"):
        build_model(run_settings("lenet"), 10)


def test_pretrained_weights_load_from_torch_cache(tmp_path, monkeypatch):
    """A weights file placed where torchvision looks is what the model starts from."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    path = weights_file("resnet18")
    assert path == tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    torch.manual_seed(7)
    imagenet_like = torchvision.models.resnet18(weights=None)  # 1000 classes, as the real file
    with torch.no_grad():
        imagenet_like.conv1.weight.normal_(0, 5)  # unlike any fresh initialisation
    path.parent.mkdir(parents=True)
    torch.save(imagenet_like.state_dict(), path)

    net = build_model(run_settings("resnet18", pretrained=True), 10)
    assert torch.equal(net.conv1.weight, imagenet_like.conv1.weight)
    assert torch.equal(net.layer4[1].bn2.running_var, imagenet_like.layer4[1].bn2.running_var)
    assert net.fc.out_features == 10  # the ImageNet head was replaced
    scratch = build_model(run_settings("resnet18", pretrained=False), 10)
    assert not torch.equal(scratch.conv1.weight, imagenet_like.conv1.weight)


@pytest.mark.parametrize(
    ("model", "file"), [("vgg16", "vgg16-397923af.pth"), ("resnet18", "resnet18-f37072fd.pth")]
)
def test_missing_weights_offline_say_which_file_where_and_the_override(tmp_path, monkeypatch, model, file):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network (test)")

    monkeypatch.setattr(torch.hub, "urlopen", offline)  # the download torchvision would start
    with pytest.raises(RuntimeError) as error:
        build_model(run_settings(model, pretrained=True), 10)
    message = str(error.value)
    assert file in message
    assert str(tmp_path / "hub" / "checkpoints") in message
    assert "pretrained=false" in message
