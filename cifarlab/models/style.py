"""Each model's colour in every figure (colour-blind-safe Okabe-Ito); no torch.

Apart from the specs (cifarlab.models.specs) so that editing a colour is in no step's code but
the figures': it redraws the figures and the report, nothing else.
"""

from __future__ import annotations

import zlib

from cifarlab.models.specs import BUILTIN, UnknownModel, model_spec

COLOURS = {
    "simple_cnn": "#0072B2",
    "dropout_cnn": "#E69F00",
    "vgg16": "#009E73",
    "resnet18": "#D55E00",
    "vit": "#CC79A7",
}
DEFAULT_COLOUR = "#555555"  # a built-in model without a colour of its own, and a name that is no model
# Colours of models without one of their own (torchvision.* and user models), chosen by name so
# that a model keeps its colour from figure to figure (rest of the Okabe-Ito palette).
EXTRA_COLOURS = ("#56B4E9", "#F0E442", "#000000", "#999999", "#882255", "#117733")


def model_colour(name: str) -> str:
    """The colour of a model in every figure (grey for a name that is no model)."""
    if name in BUILTIN:
        return COLOURS.get(name, DEFAULT_COLOUR)
    try:
        model_spec(name)
    except UnknownModel:
        return DEFAULT_COLOUR
    return EXTRA_COLOURS[zlib.crc32(name.encode()) % len(EXTRA_COLOURS)]
