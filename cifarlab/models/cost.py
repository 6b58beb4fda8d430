"""What a model costs to train, for the time estimate and the cluster's requests; no torch.

Apart from the specs (cifarlab.models.specs) so that editing a cost is in no training step's
code: it changes the estimate and the resources a job asks for, never a result. Facts that only
an import could tell (the cost of an arbitrary torchvision or user model) are the conservative
defaults below (those of VGG16, the slowest and widest built-in); the estimate's calibration
corrects the cost from measured jobs.
"""

from __future__ import annotations

from typing import NamedTuple

from cifarlab.models.specs import BUILTIN, model_spec


class ModelCost(NamedTuple):
    """seconds_per_1000_images: (GPU, CPU) seconds per 1,000 images, forward and backward, at 32 px
        (slow-machine figures on purpose: a cluster kills a job that outruns its time limit).
    activation_mb: activation memory (MB) per training image at 32 px, held in host memory on a CPU.
    """

    seconds_per_1000_images: tuple[float, float] = (0.4, 30.0)
    activation_mb: float = 2.0


# The ViT that the `vit` cost is for (the lab's, at 32 px; the schema's `vit` defaults): another
# ViT size costs in proportion to its multiply-adds (cifarlab.study.estimate.vit_factor), and a
# measurement of the `vit` family (cifarlab.training.calibrate) builds this one.
VIT_REFERENCE = {"patch_size": 4, "dim": 256, "depth": 6, "heads": 8, "mlp_dim": 512}

# The built-in models' costs (each a key of cifarlab.models.specs.BUILTIN).
COSTS: dict[str, ModelCost] = {
    "simple_cnn": ModelCost((0.2, 1.0), 0.1),
    "dropout_cnn": ModelCost((0.5, 5.0), 0.5),
    "vgg16": ModelCost((0.4, 30.0), 2.0),
    "resnet18": ModelCost((0.2, 10.0), 1.0),
    "vit": ModelCost((2.0, 30.0), 8.0),
    "airbench": ModelCost((0.05, 4.0), 2.0),
}
assert set(COSTS) == set(BUILTIN), "every built-in model has a cost"


def model_cost(name: str) -> ModelCost:
    """The cost of a model (the defaults for torchvision.* and user models); UnknownModel for a
    name that is no model."""
    model_spec(name)
    return COSTS.get(name, ModelCost())
