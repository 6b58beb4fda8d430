"""Saliency maps for a fixed sample of test images, and the randomisation sanity check.

Every map is a non-negative H x W tensor over the pixels of the *stored* test image (the
`prepare` output, values in [0, 1]): resizing to the run's input size and normalising with the
training mean/std happen inside the explained network (`Explained`), so that the maps of a 32 px
simple CNN and of a 224 px ResNet18 are maps over the same pixels and can be compared.

Methods (all explain the class score, the logit, never the softmax):
- vanilla: max over colour channels of |d logit_c / d x| (Simonyan et al. 2013);
- guided_backprop: the same, with negative gradients zeroed at every ReLU on the way back
  (Springenberg et al. 2014); needs ReLU/LeakyReLU *modules*;
- smoothgrad: the gradient averaged over noisy copies of the image, then |.| and the channel max
  (Smilkov et al. 2017);
- integrated_gradients: |sum over channels| of the path integral from a black image (Sundararajan
  et al. 2017; the channel sum keeps its completeness property);
- gradcam: Grad-CAM at the last Conv2d, upsampled to the image (Selvaraju et al. 2017).

Backends: captum (default, every model) and flashtorch 0.1.3 (the lab's library, vanilla and
guided backprop of convolutional models only; the rest of the methods then come from captum).
The sanity check (Adebayo et al. 2018) re-initialises the weights from the top layer down and
reports the Spearman rank correlation between the maps of the trained and randomised model.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cifarlab.config.schema import schema_defaults
from cifarlab.core import progress
from cifarlab.core.files import load_torch, save_torch, write_json
from cifarlab.core.paths import job_label

log = logging.getLogger(__name__)

METHODS = ("vanilla", "guided_backprop", "smoothgrad", "integrated_gradients", "gradcam")
FLASHTORCH_METHODS = ("vanilla", "guided_backprop")
TARGETS = ("true_class", "predicted")
BACKENDS = ("captum", "flashtorch")

# The step's settings (config key `saliency`, less `runs`) default to the schema's
# (cifarlab/config/config.schema.yaml, `saliency`): read there, never restated here.
SCHEMA_DEFAULTS = {k: v for k, v in schema_defaults("saliency").items() if k != "runs"}

SMOOTHGRAD_SAMPLES = 25  # noisy copies per image (the paper finds little gain past ~50)
SMOOTHGRAD_NOISE = 0.15  # noise std in pixel units, images in [0, 1]: the paper's 10-20 % of the range
IG_STEPS = 32  # Riemann steps of integrated gradients
# Cumulative fractions of the parameter layers re-initialised, from the top (output) layer down.
# The first stage is always the single top layer, the last one all layers ("all at once").
CASCADE_FRACTIONS = (0.25, 0.5, 1.0)
# A method fails the check when its maps keep this rank correlation after *every* weight was
# re-initialised: more than half the pixel ordering then comes from the image and the architecture,
# not from what the model learned. (Adebayo et al. report vanilla gradients falling to ~0.1-0.3 and
# guided backprop staying high.)
SANITY_THRESHOLD = 0.5


# --- The fixed sample ------------------------------------------------------------------------


def choose_sample(labels: torch.Tensor, num_classes: int, images_per_class: int, seed: int) -> list[int]:
    """Indices into the test set: `images_per_class` random images of each class, in class order.

    A class with no test images at all (the data allows it: cifarlab.data.prepare warns) is
    skipped with a note; one with some, but fewer than images_per_class, is an error (lower it).
    """
    if images_per_class < 1:
        raise ValueError(f"saliency.images_per_class must be >= 1, got {images_per_class}")
    generator = torch.Generator().manual_seed(seed)
    indices: list[int] = []
    for c in range(num_classes):
        of_class = (labels == c).nonzero().flatten()
        if of_class.numel() == 0:  # named by write_sample
            continue
        if of_class.numel() < images_per_class:
            raise ValueError(
                f"the test set has {of_class.numel()} images of class {c}, fewer than "
                f"saliency.images_per_class = {images_per_class}; lower it"
            )
        pick = torch.randperm(of_class.numel(), generator=generator)[:images_per_class]
        indices += of_class[pick].sort().values.tolist()
    return indices


def write_sample(test_pt: str | Path, out_json: str | Path, images_per_class: int = 1, seed: int = 0) -> dict:
    """Choose the sample from the prepared test set and write `results/<dataset>/saliency/sample.json`."""
    test = load_torch(test_pt)
    labels = test["labels"]
    indices = choose_sample(labels, len(test["classes"]), images_per_class, seed)
    counts = torch.bincount(labels, minlength=len(test["classes"])).tolist()
    skipped = [cls for cls, n in zip(test["classes"], counts, strict=True) if n == 0]
    if skipped:
        log.warning("saliency sample: class(es) %s have no test images and are skipped", skipped)
    sample = {
        "indices": indices,
        "labels": labels[indices].tolist(),
        "classes": list(test["classes"]),
        "classes_without_test_images": skipped,
        "images_per_class": images_per_class,
        "seed": seed,
    }
    write_json(sample, out_json)
    log.info("saliency sample: %d images (%d per class, seed %d)", len(indices), images_per_class, seed)
    return sample


# --- The explained network -------------------------------------------------------------------


class Explained(nn.Module):
    """Stored pixels (N x 3 x H x W in [0, 1]) -> the model's logits (N x classes).

    Resizes to the model's input size (bilinear, as training does) and normalises with the training
    mean/std, so every gradient is taken with respect to the image as stored and shown.
    """

    def __init__(self, model: nn.Module, mean: torch.Tensor, std: torch.Tensor, image_size: int):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        self.image_size = image_size

    def preprocess(self, pixels: torch.Tensor) -> torch.Tensor:
        if pixels.shape[-1] != self.image_size or pixels.shape[-2] != self.image_size:
            size = (self.image_size, self.image_size)
            # as cifarlab.training.loop.to_float does (normalising first or after is the same: both are
            # linear)
            shrink = self.image_size < pixels.shape[-1]
            pixels = F.interpolate(pixels, size=size, mode="bilinear", align_corners=False, antialias=shrink)
        return (pixels - self.mean) / self.std

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model(self.preprocess(pixels))


def _replace_module(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent_name) if parent_name else root, child, new)


def explainable(model: nn.Module, mean, std, image_size: int) -> Explained:
    """A copy of `model` ready for attribution, wrapped in `Explained`; the original is untouched.

    - LogSoftmax modules become Identity: the maps explain the logit, not the log-probability (the
      log-softmax gradient subtracts the softmax-weighted gradient of every other class);
    - ReLU/LeakyReLU modules stop working in place: backward hooks (guided backprop) cannot wrap an
      in-place op, and torchvision's models use inplace=True.
    """
    model = copy.deepcopy(model).eval()
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.LogSoftmax):
            _replace_module(model, name, nn.Identity())
        elif isinstance(module, (nn.ReLU, nn.LeakyReLU)):
            module.inplace = False
    return Explained(model, mean, std, image_size).eval()


def _has(model: nn.Module, kinds: tuple[type, ...]) -> bool:
    return any(isinstance(m, kinds) for m in model.modules())


def last_conv_name(net: nn.Module, pixels: torch.Tensor) -> str | None:
    """Name of the Conv2d that runs last in a forward pass (Grad-CAM's layer), or None."""
    order = _forward_order(net, pixels, lambda m: isinstance(m, nn.Conv2d))
    return order[-1] if order else None


def unsupported_methods(net: Explained, backend: str) -> dict[str, str]:
    """Method -> why it does not apply to this model (absent when it does)."""
    reasons = {}
    if not _has(net, (nn.ReLU, nn.LeakyReLU)):
        reasons["guided_backprop"] = (
            "the model has no ReLU modules (a ViT uses GELU); guided backprop rectifies ReLU "
            "gradients, so here it would silently be the vanilla gradient"
        )
    if not _has(net, (nn.Conv2d,)):
        reasons["gradcam"] = "the model has no Conv2d layer (Grad-CAM needs a convolutional feature map)"
    if backend == "flashtorch" and _has(net, (nn.LeakyReLU,)) and "guided_backprop" not in reasons:
        reasons["guided_backprop"] = (
            "flashtorch's guided mode rectifies nn.ReLU only and this model uses LeakyReLU; "
            "use backend captum"
        )
    return reasons


# --- Maps ------------------------------------------------------------------------------------


def _channel_max(attribution: torch.Tensor) -> torch.Tensor:
    """N x C x H x W signed attribution -> N x H x W: max over channels of the absolute value."""
    return attribution.abs().amax(dim=1)


def _guided_backprop_class():
    from captum.attr import GuidedBackprop

    class _GuidedBackprop(GuidedBackprop):
        """captum's GuidedBackprop, extended to LeakyReLU (captum hooks nn.ReLU only).

        The hook returns relu(grad wrt the activation's input), i.e. the backward pass of the
        activation followed by zeroing negative gradients: for ReLU exactly guided backprop.
        """

        def _register_hooks(self, module: nn.Module) -> None:
            if isinstance(module, (nn.ReLU, nn.LeakyReLU)):
                self.backward_hooks.append(module.register_full_backward_hook(self._backward_hook))

    return _GuidedBackprop


def captum_maps(net: Explained, pixels: torch.Tensor, targets: torch.Tensor, method: str) -> torch.Tensor:
    """One method's maps (N x H x W, >= 0) for pixels N x 3 x H x W and target classes N."""
    from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam, NoiseTunnel, Saliency

    pixels = pixels.detach()
    if method == "vanilla":
        return Saliency(net).attribute(pixels, target=targets, abs=True).amax(dim=1)
    if method == "guided_backprop":
        return _channel_max(_guided_backprop_class()(net).attribute(pixels, target=targets))
    if method == "smoothgrad":
        # Average the signed gradient (noise cancels), then |.|, as in Smilkov et al.
        grads = NoiseTunnel(Saliency(net)).attribute(
            pixels,
            nt_type="smoothgrad",
            nt_samples=SMOOTHGRAD_SAMPLES,
            nt_samples_batch_size=SMOOTHGRAD_SAMPLES,
            stdevs=SMOOTHGRAD_NOISE,
            target=targets,
            abs=False,
        )
        return _channel_max(grads)
    if method == "integrated_gradients":
        attribution = IntegratedGradients(net).attribute(
            pixels,
            baselines=torch.zeros_like(pixels),
            target=targets,
            n_steps=IG_STEPS,
            internal_batch_size=IG_STEPS * 2,
        )
        return attribution.sum(dim=1).abs()
    if method == "gradcam":
        layer = last_conv_name(net, pixels[:1])
        cam = LayerGradCam(net, net.get_submodule(layer)).attribute(
            pixels, target=targets, relu_attributions=True
        )
        return LayerAttribution.interpolate(cam, tuple(pixels.shape[-2:]), interpolate_mode="bilinear")[:, 0]
    raise ValueError(f"unknown saliency method {method!r}; use one of {list(METHODS)}")


# --- flashtorch 0.1.3 ------------------------------------------------------------------------


class _ForceTarget(nn.Module):
    """Adds a detached constant to the target logit so that it becomes the top class.

    flashtorch 0.1.3 always backpropagates from the predicted class (a `target_class` that
    differs only warns). A constant added outside the graph changes which class is on top but not
    the gradient of that logit, so flashtorch then returns d logit_target / d x.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.target: int | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model(x)
        if self.target is None:
            return logits
        with torch.no_grad():
            lift = torch.zeros_like(logits)
            lift[:, self.target] = (logits.max(dim=1).values - logits[:, self.target]).clamp(min=0) + 1.0
        return logits + lift


def _flashtorch_backprop_class():
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from flashtorch.saliency import Backprop
    except Exception as error:  # an import failure of any kind means the backend cannot run
        raise RuntimeError(
            f"saliency backend 'flashtorch' is unavailable: importing flashtorch 0.1.3 failed with "
            f"torch {torch.__version__} ({type(error).__name__}: {error}); set saliency.backend: captum"
        ) from error

    class _Backprop(Backprop):
        """flashtorch's Backprop with its guided mode fixed.

        0.1.3 registers new ReLU hooks on every call and never removes them, and its hook multiplies
        the clipped gradient by the ReLU's *output value* instead of its 0/1 mask (so its "guided"
        map is activation-weighted). Here the hook rectifies the gradient wrt the ReLU input,
        which is guided backprop, and the handles are kept so that `remove_relu_hooks` undoes them.
        """

        def _register_relu_hooks(self) -> None:
            def rectify(module, grad_input, grad_output):
                return (grad_input[0].clamp(min=0),)

            self.relu_handles = [
                m.register_full_backward_hook(rectify) for m in self.model.modules() if isinstance(m, nn.ReLU)
            ]

        def remove_relu_hooks(self) -> None:
            for handle in getattr(self, "relu_handles", []):
                handle.remove()
            self.relu_handles = []

    return _Backprop


def _check_flashtorch_can_hook(model: nn.Module, example: torch.Tensor, name: str) -> None:
    """flashtorch reads the gradient at the first Conv2d it finds: that layer must take the image."""
    first = next((n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)), None)
    if first is None:
        raise ValueError(
            f"saliency backend 'flashtorch' cannot explain model {name!r}: it has no Conv2d layer, and "
            "flashtorch 0.1.3 records the input gradient at the first Conv2d, so it would return an "
            "all-zero map; set saliency.backend: captum (or leave this run out of saliency.runs)"
        )
    seen = {}

    def check(module, inputs):
        seen.setdefault("direct", inputs[0] is example)

    handle = model.get_submodule(first).register_forward_pre_hook(check)
    try:
        with torch.no_grad():
            model(example)
    finally:
        handle.remove()
    if not seen.get("direct"):
        raise ValueError(
            f"saliency backend 'flashtorch' cannot explain model {name!r}: its first Conv2d ({first!r}) "
            "does not receive the input image directly, and flashtorch 0.1.3 records the gradient "
            "there, which would not be the image gradient; set saliency.backend: captum"
        )


def flashtorch_maps(
    net: Explained, pixels: torch.Tensor, targets: torch.Tensor, method: str, name: str = "model"
) -> torch.Tensor:
    """Vanilla or guided-backprop maps (N x H x W) computed by flashtorch 0.1.3, defects worked around.

    flashtorch explains one image at a time, w.r.t. the input of the network it is given: it gets
    the bare model (normalised, resized input) and its gradient is carried back through
    `net.preprocess` to the stored pixels. It builds its one-hot target on the CPU and moves it to
    CUDA only, so on MPS it runs on the CPU.
    """
    if method not in FLASHTORCH_METHODS:
        raise ValueError(f"flashtorch computes {list(FLASHTORCH_METHODS)} only, not {method!r}; use captum")
    backprop_class = _flashtorch_backprop_class()
    device = pixels.device if pixels.device.type != "mps" else torch.device("cpu")
    # A private copy: flashtorch's conv hook is never removed, it must not stay on `net`.
    forced = _ForceTarget(copy.deepcopy(net.model)).to(device).eval()
    net = net.to(device)
    pixels = pixels.to(device)
    _check_flashtorch_can_hook(forced, net.preprocess(pixels[:1]), name)
    with warnings.catch_warnings():
        # the deprecation of register_backward_hook, and flashtorch's own target warning
        warnings.simplefilter("ignore")
        backprop = backprop_class(forced)
        maps = []
        for image, target in zip(pixels, targets.tolist(), strict=True):
            image = image.unsqueeze(0).requires_grad_()
            model_input = net.preprocess(image)
            forced.target = target
            try:
                grad = backprop.calculate_gradients(
                    model_input.detach().requires_grad_(),
                    target_class=target,
                    guided=method == "guided_backprop",
                    use_gpu=device.type == "cuda",
                )
            finally:
                backprop.remove_relu_hooks()
            # flashtorch's channel max has no abs (it would keep the largest *signed* value), so
            # take the raw C x H x W gradient and do |.| and the max here, in pixel space.
            (pixel_grad,) = torch.autograd.grad(model_input, image, grad_outputs=grad.unsqueeze(0).to(device))
            maps.append(_channel_max(pixel_grad)[0])
    return torch.stack(maps)


# --- All maps of one network -----------------------------------------------------------------


def compute_maps(
    net: Explained,
    pixels: torch.Tensor,
    targets: torch.Tensor,
    methods: list[str],
    backend: str = "captum",
    seed: int = 0,
    name: str = "model",
) -> dict[str, torch.Tensor]:
    """method -> maps (float32 N x H x W on the CPU) for pixels N x 3 x H x W in [0, 1]."""
    maps = {}
    for method in methods:
        torch.manual_seed(seed)  # SmoothGrad's noise: the same draws for trained and randomised nets
        if backend == "flashtorch" and method in FLASHTORCH_METHODS:
            result = flashtorch_maps(net, pixels, targets, method, name)
        else:
            result = captum_maps(net, pixels, targets, method)
        maps[method] = result.detach().float().cpu()
    return maps


def check_not_zero(maps: dict[str, torch.Tensor], name: str) -> list[str]:
    """Raise if a gradient map is all zero (broken gradient flow, e.g. hooks on the wrong layer).

    Grad-CAM is the exception: with its ReLU it is legitimately all zero when no feature-map channel
    has positive evidence for the class; such images are returned as "method[i]" so the figure can
    say so instead of showing an empty map.
    """
    zero = []
    for method, m in maps.items():
        flat = m.flatten(1)
        for i in (flat.abs().amax(dim=1) == 0).nonzero().flatten().tolist():
            if method != "gradcam":
                raise RuntimeError(
                    f"{method} map of image {i} of run {name!r} is all zero: the gradient did not reach "
                    "the input (a hook on the wrong layer, or a non-differentiable model); not writing it"
                )
            zero.append(f"{method}[{i}]")
    return zero


# --- Sanity check (Adebayo et al. 2018) ------------------------------------------------------


def _forward_order(net: nn.Module, pixels: torch.Tensor, keep) -> list[str]:
    """Names of the modules for which keep(module) holds, in the order a forward pass first calls them."""
    order: list[str] = []
    handles = []
    for name, module in net.named_modules():
        if keep(module):

            def record(module, inputs, name=name):
                if name not in order:
                    order.append(name)

            handles.append(module.register_forward_pre_hook(record))
    try:
        with torch.no_grad():
            net(pixels)
    finally:
        for handle in handles:
            handle.remove()
    return order


def parameter_layers(net: nn.Module, pixels: torch.Tensor) -> list[str]:
    """Modules that own parameters directly, bottom (input) to top (output), by forward order."""
    return _forward_order(net, pixels, lambda m: any(True for _ in m.parameters(recurse=False)))


@torch.no_grad()
def reinitialise(net: nn.Module, names: list[str], seed: int) -> None:
    """Fresh random weights for the named modules: their own `reset_parameters`, else N(0, std).

    Modules without `reset_parameters` (a ViT's position embedding and class token) get normal
    draws with the trained tensor's std: the learned values are gone, the scale stays.
    """
    torch.manual_seed(seed)
    for name in names:
        module = net.get_submodule(name)
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
        else:
            for p in module.parameters(recurse=False):
                std = float(p.std()) if p.numel() > 1 else 1.0
                p.normal_(0.0, std if std > 0 else 1.0)


def cascade_stages(num_layers: int) -> list[int]:
    """How many top layers each cascade stage re-initialises: 1, then the CASCADE_FRACTIONS, to all."""
    counts = [1] + [max(1, math.ceil(f * num_layers)) for f in CASCADE_FRACTIONS]
    return sorted(set(counts))


def _ranks(x: torch.Tensor) -> torch.Tensor:
    """1-based ranks of a 1-D tensor, ties sharing their average rank (float64)."""
    values, order = x.sort()
    _, group, counts = torch.unique_consecutive(values, return_inverse=True, return_counts=True)
    counts = counts.double()
    average = counts.cumsum(0) - (counts - 1) / 2  # the mean of each tie group's ranks
    ranks = torch.empty(x.numel(), dtype=torch.float64)
    ranks[order] = average[group]
    return ranks


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman rank correlation of two equal-size tensors (flattened); NaN if one is constant."""
    ra = _ranks(a.detach().flatten().cpu().double())
    rb = _ranks(b.detach().flatten().cpu().double())
    if ra.numel() != rb.numel():
        raise ValueError(f"spearman needs tensors of equal size, got {ra.numel()} and {rb.numel()}")
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denominator = ra.norm() * rb.norm()
    return float("nan") if denominator == 0 else float(ra @ rb / denominator)


def sanity_check(
    net: Explained,
    pixels: torch.Tensor,
    targets: torch.Tensor,
    trained_maps: dict[str, torch.Tensor],
    backend: str = "captum",
    seed: int = 0,
    name: str = "model",
    steps: progress.Steps | None = None,
) -> dict[str, Any]:
    """Cascading randomisation: Spearman correlation of trained vs randomised maps, per stage.

    Stage k re-initialises the top k parameter layers (the last stage: every layer) of a copy of
    `net`; the maps explain the same target classes. A constant map (a Grad-CAM of a random net is
    often all zero) has no rank order: its correlation is NaN, reported as null. `steps`, when
    given, is advanced by one network state per stage (the trained net being its first).
    """
    layers = parameter_layers(net, pixels[:1])
    stages = []
    correlations: dict[str, list[list[float]]] = {m: [] for m in trained_maps}
    for count in cascade_stages(len(layers)):
        randomised = copy.deepcopy(net)
        reinitialise(randomised, layers[::-1][:count], seed)
        maps = compute_maps(randomised, pixels, targets, list(trained_maps), backend, seed, name)
        for method, trained in trained_maps.items():
            correlations[method].append([spearman(t, r) for t, r in zip(trained, maps[method], strict=True)])
        label = "all layers" if count == len(layers) else f"top {count} layer{'s' * (count > 1)}"
        stages.append({"name": label, "layers_reinitialised": count, "top_layer": layers[-count]})
        log.info("sanity check: %s re-initialised", label)
        if steps is not None:
            steps.update(len(stages) + 1)
    summary = {}
    for method, per_stage in correlations.items():
        means = [_nanmean(values) for values in per_stage]
        final = means[-1]
        summary[method] = {
            "mean": means,
            "per_image": [[_json_float(v) for v in values] for values in per_stage],
            "fully_randomised": final,
            # NaN after full randomisation = the map became constant: it did change.
            "passes": bool(final is None or final < SANITY_THRESHOLD),
        }
    return {
        "mode": "cascading, top layer down; the last stage re-initialises all layers at once",
        "correlation": "Spearman rank correlation of the maps, per image",
        "threshold": SANITY_THRESHOLD,
        "layers": layers,
        "stages": stages,
        "methods": summary,
        "failing": [m for m, s in summary.items() if not s["passes"]],
    }


def _nanmean(values: list[float]) -> float | None:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else None


def _json_float(value: float) -> float | None:
    return None if math.isnan(value) else value


# --- The step --------------------------------------------------------------------------------


def resolve_settings(settings: dict | None) -> dict:
    """The step's settings with defaults filled in; a bad value is an error that names it."""
    resolved = {
        **copy.deepcopy(SCHEMA_DEFAULTS),
        **{k: v for k, v in (settings or {}).items() if k != "runs"},
    }
    if resolved["target"] not in TARGETS:
        raise ValueError(f"saliency.target must be one of {list(TARGETS)}, got {resolved['target']!r}")
    if resolved["backend"] not in BACKENDS:
        raise ValueError(f"saliency.backend must be one of {list(BACKENDS)}, got {resolved['backend']!r}")
    unknown = [m for m in resolved["methods"] if m not in METHODS]
    if unknown or not resolved["methods"]:
        raise ValueError(f"saliency.methods: unknown or empty {unknown}; choose from {list(METHODS)}")
    return resolved


def explain(
    net: Explained,
    pixels: torch.Tensor,
    labels: torch.Tensor,
    settings: dict | None = None,
    name: str = "model",
) -> tuple[dict, dict]:
    """Maps and sanity check of one network on the sample: (maps dict for .pt, result for .json)."""
    settings = resolve_settings(settings)
    backend, seed = settings["backend"], settings["seed"]
    device = pixels.device
    with torch.no_grad():
        predicted = net(pixels).argmax(dim=1)
    targets = labels.to(device) if settings["target"] == "true_class" else predicted
    unsupported = unsupported_methods(net, backend)
    if backend == "flashtorch":
        _check_flashtorch_can_hook(net.model, net.preprocess(pixels[:1]), name)
    methods = [m for m in settings["methods"] if m not in unsupported]
    if not methods:
        raise ValueError(
            f"none of saliency.methods {settings['methods']} applies to run {name!r}: {unsupported}"
        )
    start = time.perf_counter()
    # Progress in network states: the trained net, then each stage of the sanity check.
    states = 1 + len(cascade_stages(len(parameter_layers(net, pixels[:1]))))
    steps = progress.Steps(f"saliency {name}", states, "network states", every=0)
    maps = compute_maps(net, pixels, targets, methods, backend, seed, name)
    steps.update(1)
    zero_maps = check_not_zero(maps, name)
    sanity = sanity_check(net, pixels, targets, maps, backend, seed, name, steps)
    seconds = time.perf_counter() - start
    result = {
        "target": settings["target"],
        "backend": backend,
        "method_backend": {m: backend if m in FLASHTORCH_METHODS else "captum" for m in methods},
        "methods": methods,
        "unsupported": {m: r for m, r in unsupported.items() if m in settings["methods"]},
        "labels": labels.tolist(),
        "predicted": predicted.tolist(),
        "targets": targets.tolist(),
        "zero_maps": zero_maps,
        "gradcam_layer": last_conv_name(net, pixels[:1]) if "gradcam" in methods else None,
        "smoothgrad": {"samples": SMOOTHGRAD_SAMPLES, "noise_std": SMOOTHGRAD_NOISE},
        "integrated_gradients": {"steps": IG_STEPS, "baseline": "black image"},
        "sanity": sanity,
        "seconds": seconds,
    }
    return maps, result


def run_saliency(
    model_pt: str | Path,
    test_pt: str | Path,
    sample_json: str | Path,
    maps_out: str | Path,
    result_out: str | Path,
    settings: dict | None = None,
    device: str = "auto",
) -> dict:
    """The `saliency` step for one run: maps to `maps_out` (.pt), results to `result_out` (.json)."""
    from cifarlab.core.device import pick_device
    from cifarlab.models import load_trained

    dev = pick_device(device)
    model, saved = load_trained(model_pt, dev)
    run = saved["run"]
    sample = json.loads(Path(sample_json).read_text())
    test = load_torch(test_pt)
    indices = torch.tensor(sample["indices"], dtype=torch.long)
    images = test["images"][indices]
    labels = test["labels"][indices]
    if labels.tolist() != sample["labels"]:
        raise ValueError(f"{sample_json} does not match {test_pt} (labels differ): rerun saliency_sample")
    net = explainable(model, saved["mean"], saved["std"], run["image_size"]).to(dev)
    pixels = images.float().div(255).to(dev)
    maps, result = explain(net, pixels, labels, settings, name=job_label(run, per_seed=False))
    result = {
        "run": run["name"],
        "model": run["model"],
        "classes": list(saved["classes"]),
        "indices": sample["indices"],
        **result,
    }
    save_torch(
        {
            "run": run["name"],
            "model": run["model"],
            "indices": indices,
            "images": images,
            "labels": labels,
            "predicted": torch.tensor(result["predicted"]),
            "targets": torch.tensor(result["targets"]),
            "target": result["target"],
            "classes": list(saved["classes"]),
            "maps": maps,
        },
        maps_out,
    )
    write_json(result, result_out)
    for method, s in result["sanity"]["methods"].items():
        log.info(
            "%s: rho(trained, all random) = %s, %s",
            method,
            s["fully_randomised"],
            "passes" if s["passes"] else "FAILS",
        )
    return result
