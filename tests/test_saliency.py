"""Saliency maps against known answers, the backends' guards, and the randomisation sanity check."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from conftest import lab_run
from torch import nn

from cifarlab.analysis import saliency
from cifarlab.plots import saliency as saliency_figure
from cifarlab.plots import saliency_comparison as saliency_comparison_figure

SIZE = 8  # pixels: small images keep the exact-answer tests instant


def _linear_net(num_classes: int = 4, std: float = 0.5) -> tuple[saliency.Explained, torch.Tensor]:
    """A linear classifier as a single Conv2d covering the whole image (so flashtorch can hook it).

    logit_c = <W_c, (x - mean) / std> + b_c, hence d logit_c / d x = W_c / std, exactly.
    """
    torch.manual_seed(0)
    conv = nn.Conv2d(3, num_classes, SIZE)
    model = nn.Sequential(conv, nn.Flatten())
    net = saliency.explainable(model, torch.full((3,), 0.5), torch.full((3,), std), SIZE)
    return net, conv.weight.detach() / std  # classes x 3 x H x W


def _images(n: int, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


# --- Spearman and the sample -----------------------------------------------------------------


def test_spearman_known_values():
    a = torch.tensor([0.1, 0.5, 0.2, 0.9, 0.3])
    assert saliency.spearman(a, a.exp()) == pytest.approx(1.0)  # any increasing map keeps the ranks
    assert saliency.spearman(a, -a) == pytest.approx(-1.0)
    # Ties share their average rank: x ranks [1, 2.5, 2.5, 4], y ranks [1, 3, 2, 4]; Pearson of those.
    x, y = torch.tensor([1.0, 2.0, 2.0, 3.0]), torch.tensor([1.0, 3.0, 2.0, 4.0])
    rx, ry = torch.tensor([1, 2.5, 2.5, 4]) - 2.5, torch.tensor([1.0, 3, 2, 4]) - 2.5
    assert saliency.spearman(x, y) == pytest.approx(float(rx @ ry / (rx.norm() * ry.norm())))
    assert torch.isnan(torch.tensor(saliency.spearman(torch.zeros(5), a)))  # a constant map has no ranks


def test_sample_is_one_per_class_and_fixed_by_seed():
    labels = torch.arange(10).repeat(30)[torch.randperm(300, generator=torch.Generator().manual_seed(0))]
    picked = saliency.choose_sample(labels, 10, 2, seed=3)
    assert labels[picked].tolist() == [c for c in range(10) for _ in range(2)]
    assert picked == saliency.choose_sample(labels, 10, 2, seed=3)
    assert picked != saliency.choose_sample(labels, 10, 2, seed=4)
    with pytest.raises(ValueError, match="images_per_class"):
        saliency.choose_sample(labels, 10, 31, seed=0)


# --- Known answers ---------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["captum", "flashtorch"])
def test_vanilla_gradient_of_a_linear_model_is_its_weights(backend):
    """The exact answer: max over channels of |W_c| / std, whatever the image.

    The targets are chosen to differ from the predicted classes, so this also checks that the
    flashtorch backend explains the requested class (flashtorch itself always takes the top one).
    """
    net, weights = _linear_net()
    pixels = _images(4)
    with torch.no_grad():
        targets = (net(pixels).argmax(dim=1) + 1) % 4
    maps = saliency.compute_maps(net, pixels, targets, ["vanilla"], backend)["vanilla"]
    expected = weights[targets].abs().amax(dim=1)
    torch.testing.assert_close(maps, expected, rtol=1e-4, atol=1e-6)


def test_smoothgrad_and_integrated_gradients_of_a_linear_model():
    """A linear model has a constant gradient: SmoothGrad returns it unchanged, and integrated
    gradients from a black image are exactly x * gradient (summed over channels)."""
    net, weights = _linear_net()
    pixels, targets = _images(3), torch.tensor([0, 2, 3])
    maps = saliency.compute_maps(net, pixels, targets, ["smoothgrad", "integrated_gradients"])
    torch.testing.assert_close(maps["smoothgrad"], weights[targets].abs().amax(dim=1), rtol=1e-4, atol=1e-6)
    expected = (pixels * weights[targets]).sum(dim=1).abs()
    torch.testing.assert_close(maps["integrated_gradients"], expected, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("backend", ["captum", "flashtorch"])
def test_guided_backprop_of_a_relu_network(backend):
    """f = V relu(W x): guided backprop gives W^T [(W x > 0) * max(V_c, 0)] (negative gradients are
    zeroed at the ReLU), which differs from the vanilla W^T [(W x > 0) * V_c]."""
    torch.manual_seed(0)
    hidden, classes = 16, 3
    first, last = nn.Conv2d(3, hidden, SIZE), nn.Linear(hidden, classes)
    model = nn.Sequential(first, nn.Flatten(), nn.ReLU(inplace=True), last)
    net = saliency.explainable(model, torch.zeros(3), torch.ones(3), SIZE)
    pixels, targets = _images(2), torch.tensor([0, 2])
    maps = saliency.compute_maps(net, pixels, targets, ["guided_backprop", "vanilla"], backend)
    w = first.weight.detach().flatten(1)  # hidden x 3*H*W
    active = (pixels.flatten(1) @ w.T + first.bias.detach()) > 0  # N x hidden
    guided = (active * last.weight.detach()[targets].clamp(min=0)) @ w
    expected = guided.view(-1, 3, SIZE, SIZE).abs().amax(dim=1)
    torch.testing.assert_close(maps["guided_backprop"], expected, rtol=1e-4, atol=1e-6)
    assert not torch.allclose(maps["guided_backprop"], maps["vanilla"])
    # flashtorch worked on its own copy: no hook was left on the caller's network
    assert all(not m._forward_hooks and not m._backward_hooks for m in net.modules())


def test_logsoftmax_head_is_explained_at_the_logit():
    """A model ending in nn.LogSoftmax (the lab's simple CNN) is explained at the logit."""
    net, weights = _linear_net()
    with_head = nn.Sequential(net.model, nn.LogSoftmax(dim=1))
    wrapped = saliency.explainable(with_head, net.mean.flatten(), net.std.flatten(), SIZE)
    pixels, targets = _images(2), torch.tensor([1, 3])
    maps = saliency.compute_maps(wrapped, pixels, targets, ["vanilla"])["vanilla"]
    torch.testing.assert_close(maps, weights[targets].abs().amax(dim=1), rtol=1e-4, atol=1e-6)


def test_gradcam_finds_the_region_of_the_object():
    """Image c is black but for a bright quadrant c; the model's class scores are the spatial means
    of its feature maps. Grad-CAM of the image's class must then lie in that quadrant: this checks the
    layer, the target indexing, the upsampling and the orientation (no transposed rows/columns)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with torch.no_grad():
        model[0].weight.uniform_(0.1, 1.0)  # every feature responds to brightness
        model[0].bias.zero_()
    net = saliency.explainable(model, torch.zeros(3), torch.ones(3), SIZE)
    q = SIZE // 2
    quadrants = [(slice(r * q, (r + 1) * q), slice(c * q, (c + 1) * q)) for r in range(2) for c in range(2)]
    pixels = torch.zeros(4, 3, SIZE, SIZE)
    for i, (rows, cols) in enumerate(quadrants):
        pixels[i, :, rows, cols] = 0.8
    cam = saliency.compute_maps(net, pixels, torch.arange(4), ["gradcam"])["gradcam"]
    for i, (rows, cols) in enumerate(quadrants):
        assert cam[i, rows, cols].sum() / cam[i].sum() > 0.99
    assert saliency.last_conv_name(net, pixels[:1]) == "model.0"


# --- Models the methods cannot handle --------------------------------------------------------


def _tiny_vit():
    from vit_pytorch import ViT

    torch.manual_seed(0)
    model = ViT(image_size=16, patch_size=4, num_classes=3, dim=32, depth=1, heads=2, mlp_dim=32)
    return saliency.explainable(model, torch.full((3,), 0.5), torch.full((3,), 0.25), 16)


def test_vit_maps_are_nonzero_and_unsupported_methods_are_named():
    net = _tiny_vit()
    pixels = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    unsupported = saliency.unsupported_methods(net, "captum")
    assert set(unsupported) == {"guided_backprop", "gradcam"}
    assert "GELU" in unsupported["guided_backprop"]
    maps = saliency.compute_maps(
        net, pixels, torch.tensor([0, 1, 2]), ["vanilla", "smoothgrad", "integrated_gradients"]
    )
    for method, m in maps.items():
        assert (m.flatten(1).amax(dim=1) > 0).all(), method
        assert m.shape == (3, 16, 16)


def test_flashtorch_refuses_a_model_it_cannot_hook():
    net = _tiny_vit()
    pixels = torch.rand(1, 3, 16, 16)
    with pytest.raises(ValueError, match="no Conv2d.*all-zero.*captum"):
        saliency.compute_maps(net, pixels, torch.tensor([0]), ["vanilla"], backend="flashtorch", name="vit")
    # A first Conv2d that does not see the image would yield the gradient of something else.
    model = nn.Sequential(nn.BatchNorm2d(3), nn.Conv2d(3, 2, SIZE), nn.Flatten())
    net = saliency.explainable(model, torch.zeros(3), torch.ones(3), SIZE)
    with pytest.raises(ValueError, match="does not receive the input image"):
        saliency.compute_maps(net, _images(1), torch.tensor([0]), ["vanilla"], backend="flashtorch")


def test_an_all_zero_map_is_an_error_not_a_result():
    net, _ = _linear_net()
    with torch.no_grad():
        net.model[0].weight.zero_()  # the logits no longer depend on the image
    pixels = _images(2)
    maps = saliency.compute_maps(net, pixels, torch.tensor([0, 1]), ["vanilla"])
    with pytest.raises(RuntimeError, match="all zero"):
        saliency.check_not_zero(maps, "broken")


# --- A trained CNN whose evidence lives in one region ------------------------------------------

MARK = 6  # pixels: side of the checkerboard mark that decides the class


def _marked(images: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor, list[tuple[int, int]]]:
    """The fixture's shape images with a checkerboard mark in one quadrant; the class is the quadrant.

    The synthetic shape stays in the image as a distractor, so a map that follows the image's
    edges rather than the evidence lands on the shape, not on the mark. Returns pixels in [0, 1],
    labels (0-3) and the mark's top-left corner per image.
    """
    generator = torch.Generator().manual_seed(seed)
    pixels = images.float() / 255
    labels = torch.randint(0, 4, (len(pixels),), generator=generator)
    checker = ((torch.arange(MARK).view(-1, 1) + torch.arange(MARK)) % 2).float()
    corners = []
    for i, quadrant in enumerate(labels.tolist()):
        dy, dx = torch.randint(0, 16 - MARK, (2,), generator=generator).tolist()
        top, left = (quadrant // 2) * 16 + dy, (quadrant % 2) * 16 + dx
        pixels[i, :, top : top + MARK, left : left + MARK] = checker
        corners.append((top, left))
    return pixels, labels, corners


@pytest.fixture(scope="module")
def region_model(synthetic_data):
    """A small ReLU CNN trained one epoch on 1,000 marked images (it reaches ~100 % in that epoch)."""
    torch.manual_seed(0)
    pixels, labels, _ = _marked(synthetic_data["train"]["images"][:1000], seed=0)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 8 * 8, 4),
    )
    net = saliency.Explained(model, torch.full((3,), 0.5), torch.full((3,), 0.25), 32)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for batch in torch.randperm(len(labels)).split(50):
        loss = F.cross_entropy(net(pixels[batch]), labels[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    net.eval()
    test_pixels, test_labels, corners = _marked(synthetic_data["test"]["images"][:200], seed=1)
    with torch.no_grad():
        accuracy = (net(test_pixels).argmax(dim=1) == test_labels).float().mean().item()
    assert accuracy > 0.9, f"the test model did not learn the marks (accuracy {accuracy:.2f})"
    return net, test_pixels[:8], test_labels[:8], corners[:8]


def test_trained_cnn_vanilla_map_lies_on_the_evidence(region_model):
    """The mark covers 36 / 1024 = 3.5 % of the image; a map that ignored the evidence would put about
    that share of its mass there. We ask for 3x that share on every image (measured: 17-30 %)."""
    net, pixels, labels, corners = region_model
    maps = saliency.compute_maps(net, pixels, labels, ["vanilla"])["vanilla"]
    share = MARK * MARK / pixels[0, 0].numel()
    for m, (top, left) in zip(maps, corners, strict=True):
        assert m[top : top + MARK, left : left + MARK].sum() / m.sum() > 3 * share


def test_sanity_check_vanilla_changes_when_weights_are_randomised(region_model):
    net, pixels, labels, _ = region_model
    maps, result = saliency.explain(net, pixels, labels, {"methods": ["vanilla"]}, "region")
    vanilla = result["sanity"]["methods"]["vanilla"]
    # With every layer re-initialised little of the trained map's pixel ranking is left
    # (measured: 0.13), and the correlation falls as the cascade goes down.
    assert vanilla["fully_randomised"] < saliency.SANITY_THRESHOLD
    assert vanilla["passes"] and result["sanity"]["failing"] == []
    assert vanilla["mean"][-1] < vanilla["mean"][0]
    assert result["sanity"]["stages"][-1]["layers_reinitialised"] == len(result["sanity"]["layers"]) == 3


# --- The step and its figures, end to end on files -------------------------------------------


def test_files_and_figures(tmp_path, synthetic_files, monkeypatch):
    """run_saliency on a saved model writes maps + JSON, and both figures are drawn from them."""
    from cifarlab import models

    run = lab_run(name="tiny")
    test = torch.load(synthetic_files["test"], weights_only=False)
    model = models.build_model(run, 10)
    saved = {"model_state": model.state_dict(), "run": run, "classes": test["classes"]}
    saved.update(mean=test["mean"], std=test["std"])
    torch.save(saved, tmp_path / "model.pt")
    sample = tmp_path / "sample.json"
    saliency.write_sample(synthetic_files["test"], sample, images_per_class=1, seed=0)
    assert len(json.loads(sample.read_text())["indices"]) == 10

    monkeypatch.setattr(saliency, "SMOOTHGRAD_SAMPLES", 4)  # speed only; the maths is tested above
    monkeypatch.setattr(saliency, "IG_STEPS", 4)
    settings = {"methods": ["vanilla", "guided_backprop", "gradcam"], "target": "predicted"}
    result = saliency.run_saliency(
        tmp_path / "model.pt",
        synthetic_files["test"],
        sample,
        tmp_path / "m.pt",
        tmp_path / "r.json",
        settings,
        "cpu",
    )
    on_disk = json.loads((tmp_path / "r.json").read_text())
    assert on_disk["targets"] == on_disk["predicted"] == result["predicted"]
    assert set(on_disk["sanity"]["methods"]) == {"vanilla", "guided_backprop", "gradcam"}
    maps = torch.load(tmp_path / "m.pt", weights_only=False)
    assert maps["maps"]["vanilla"].shape == (10, 32, 32)

    saliency_figure.plot_saliency(tmp_path / "m.pt", tmp_path / "r.json", tmp_path / "fig.png")
    saliency_comparison_figure.plot_saliency_comparison(
        [tmp_path / "m.pt", tmp_path / "m.pt"],
        [tmp_path / "r.json", tmp_path / "r.json"],
        tmp_path / "cmp.png",
    )
    assert (tmp_path / "fig.png").stat().st_size > 10_000 and (tmp_path / "cmp.png").stat().st_size > 10_000


class _RunsCode:
    """A pickle that touches a file when loaded: what a malicious `.pt` could do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        from pathlib import Path

        return (Path.touch, (Path(self.marker),))


def test_saliency_files_are_loaded_without_running_code(tmp_path):
    """test.pt and the maps are tensors and plain types: loaded with weights_only=True like the rest."""
    marker = tmp_path / "code-ran"
    evil = tmp_path / "evil.pt"
    torch.save({"labels": torch.zeros(3, dtype=torch.long), "classes": ["a"], "x": _RunsCode(marker)}, evil)
    with pytest.raises(Exception, match="(?i)weights.only"):
        saliency.write_sample(evil, tmp_path / "sample.json")
    with pytest.raises(Exception, match="(?i)weights.only"):
        saliency_figure.plot_saliency(evil, tmp_path / "r.json", tmp_path / "fig.png")
    assert not marker.exists()
