"""Training-time augmentation and the batches of one training epoch.

Random crop + flip, or alternating flip (airbench94), and reflect-padded translation, drawn from
the epoch's generator (a function of seed and epoch only, so a resumed run redraws the batches an
uninterrupted one would have seen). The draws of a whole epoch are made at its start, batch after
batch in the order a per-batch loop would make them (the same numbers), and cross to the device in
one copy that does not block (`EpochDraws`): no step of the epoch waits for the host.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from cifarlab.core.device import use_channels_last
from cifarlab.training.batching import epoch_order, feature_batches, image_batches, upload
from cifarlab.training.settings import RunSettings

CROP_PADDING = 4  # pixels of zero padding around the image before the random crop (as in torchvision)


AUGMENTS = ("none", "crop_flip", "alternating_flip")


def crop_flip_draws(n: int, generator: torch.Generator | None) -> tuple[torch.Tensor, ...]:
    """The random numbers of `crop_flip` for n images (CPU): row offsets, column offsets, flips."""
    dy = torch.randint(0, 2 * CROP_PADDING + 1, (n, 1), generator=generator)
    dx = torch.randint(0, 2 * CROP_PADDING + 1, (n, 1), generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5
    return dy, dx, flip


def crop_flip(images: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Random 4-px-padded crop and horizontal flip of a batch (N x C x H x W, any dtype), per image.

    The random numbers are drawn on the CPU from `generator`, so batches are the same on every
    device; the gather itself runs where `images` are.
    """
    dy, dx, flip = (t.to(images.device) for t in crop_flip_draws(len(images), generator))
    return shifted(F.pad(images, (CROP_PADDING,) * 4), CROP_PADDING, dy, dx, flip)


def translate_draws(n: int, pixels: int, generator: torch.Generator | None) -> tuple[torch.Tensor, ...]:
    """The random numbers of `translate` for n images (CPU): row and column offsets in [0, 2 * pixels]."""
    dy = torch.randint(0, 2 * pixels + 1, (n, 1), generator=generator)
    dx = torch.randint(0, 2 * pixels + 1, (n, 1), generator=generator)
    return dy, dx


def translate(images: torch.Tensor, pixels: int, generator: torch.Generator | None) -> torch.Tensor:
    """Shift each image of a batch by up to `pixels` in both axes, edges reflected (airbench94's
    translate); N x C x H x W in, same shape out."""
    dy, dx = (t.to(images.device) for t in translate_draws(len(images), pixels, generator))
    no_flip = torch.zeros(len(images), dtype=torch.bool, device=images.device)
    return shifted(F.pad(images, (pixels,) * 4, mode="reflect"), pixels, dy, dx, no_flip)


def flip_phases(n: int, seed: int) -> torch.Tensor:
    """Which of n training images start flipped (bool n): a function of the run's seed only."""
    return torch.rand(n, generator=torch.Generator().manual_seed(seed)) < 0.5


def alternating_flip(images: torch.Tensor, phases: torch.Tensor, epoch: int) -> torch.Tensor:
    """Flip the images whose phase differs from the epoch's parity (N x C x H x W, phases bool N).

    airbench94's scheme: each image is flipped in every other epoch, a random half of them
    starting in epoch 0, so consecutive epochs always see both orientations of every image
    (random flips repeat an orientation half of the time).
    """
    flip = phases != bool(epoch % 2)
    return torch.where(flip.view(-1, 1, 1, 1), images.flip(-1), images)


def shifted(
    padded: torch.Tensor, padding: int, dy: torch.Tensor, dx: torch.Tensor, flip: torch.Tensor
) -> torch.Tensor:
    """The crops of a batch padded by `padding` px at row/column offsets dy, dx (int N x 1, in
    [0, 2 * padding]), read backwards where `flip` (bool N); the size of the unpadded images."""
    n, _, hp, wp = padded.shape
    h, w = hp - 2 * padding, wp - 2 * padding
    rows = dy + torch.arange(h, device=padded.device)  # N x H
    cols = dx + torch.arange(w, device=padded.device)  # N x W
    cols = torch.where(flip[:, None], cols.flip(1), cols)  # a flip reads the columns backwards
    batch = torch.arange(n, device=padded.device)[:, None, None]
    # Advanced indices around a slice put their dims first: N x H x W x C.
    out = padded[batch, :, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous()


@dataclass
class EpochDraws:
    """An epoch's random numbers, on the device, by position in the epoch's order (n images).

    order: int64 n, the images in the epoch's order; crop: int64 3 x n (row offset, column offset,
    flip) of crop_flip, or None; shift: int64 2 x n (row, column offsets) of a translation by up to
    `pixels`, or None; flip: bool n, alternating_flip's flips in this epoch, or None.
    """

    order: torch.Tensor
    crop: torch.Tensor | None = None
    shift: torch.Tensor | None = None
    pixels: int = 0
    flip: torch.Tensor | None = None

    @classmethod
    def draw(
        cls,
        n: int,
        batch_size: int,
        *,
        generator: torch.Generator | None,
        device: torch.device | str,
        shuffle: bool = True,
        augment: str = "none",
        translate_pixels: int = 0,
        flip_phase: torch.Tensor | None = None,
        epoch: int = 0,
    ) -> EpochDraws:
        """Draw an epoch's order, then each batch's crop_flip and translate numbers in turn (the
        order of a per-batch loop: the same numbers), on the CPU; upload them in one copy."""
        order = epoch_order(n, shuffle=shuffle, generator=generator)
        crop, shift = [], []
        for first in range(0, n, batch_size):
            m = min(batch_size, n - first)
            if augment == "crop_flip":
                crop.append(torch.stack([t.view(m).long() for t in crop_flip_draws(m, generator)]))
            if translate_pixels:
                shift.append(
                    torch.stack([t.view(m) for t in translate_draws(m, translate_pixels, generator)])
                )
        rows = {"order": order.view(1, n)}
        if crop:
            rows["crop"] = torch.cat(crop, 1)
        if shift:
            rows["shift"] = torch.cat(shift, 1)
        if augment == "alternating_flip":
            rows["flip"] = (flip_phase[order] != bool(epoch % 2)).long().view(1, n)
        packed = upload(torch.cat(list(rows.values())), device)  # one copy for all of them
        parts = dict(zip(rows, packed.split([len(r) for r in rows.values()]), strict=True))
        flip = parts["flip"][0].bool() if "flip" in parts else None
        return cls(parts["order"][0], parts.get("crop"), parts.get("shift"), translate_pixels, flip)

    def augment(self, images: torch.Tensor, positions: slice) -> torch.Tensor:
        """The uint8 images N x C x H x W at `positions` of the epoch's order, augmented with the
        epoch's draws there (on the device of `images`; the same as crop_flip, alternating_flip
        and translate with per-batch draws)."""
        if self.crop is not None:
            dy, dx, flip = self.crop[:, positions]
            padded = F.pad(images, (CROP_PADDING,) * 4)
            images = shifted(padded, CROP_PADDING, dy.view(-1, 1), dx.view(-1, 1), flip.bool())
        elif self.flip is not None:
            images = torch.where(self.flip[positions].view(-1, 1, 1, 1), images.flip(-1), images)
        if self.shift is not None:
            dy, dx = self.shift[:, positions]
            no_flip = torch.zeros(len(images), dtype=torch.bool, device=images.device)
            padded = F.pad(images, (self.pixels,) * 4, mode="reflect")
            images = shifted(padded, self.pixels, dy.view(-1, 1), dx.view(-1, 1), no_flip)
        return images


def batches(
    data: dict,
    batch_size: int,
    *,
    shuffle: bool,
    generator: torch.Generator | None,
    device: torch.device | str,
    augment: str,
    image_size: int,
    channels_last: bool = False,
    start: int = 0,
    translate_pixels: int = 0,
    flip_phase: torch.Tensor | None = None,
    epoch: int = 0,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(x, y) batches: x normalised float N x 3 x image_size^2 on `device`, y int64 N.

    `data` is a prepared dict (docs/architecture.md); move it with `to_device` first so that the
    images cross to the GPU once, not every epoch. The order (when `shuffle`) and augmentation
    are drawn from `generator` (CPU). augment: none, crop_flip, or alternating_flip (needs
    `flip_phase`, bool per image of `data`, and the `epoch`); `translate_pixels` > 0 adds a
    reflect-padded random translation. `start` skips that many batches (resuming mid-epoch) with
    the same random draws as an uninterrupted pass. The last batch may be smaller.
    """
    if augment not in AUGMENTS:
        raise ValueError(f"unknown augment {augment!r}; use one of {list(AUGMENTS)}")
    if augment == "alternating_flip" and flip_phase is None:
        raise ValueError("augment alternating_flip needs each image's flip_phase (train.flip_phases)")

    n = len(data["labels"])
    draws = EpochDraws.draw(
        n, batch_size, generator=generator, device=device, shuffle=shuffle, augment=augment,
        translate_pixels=translate_pixels, flip_phase=flip_phase, epoch=epoch,
    )  # fmt: skip
    yield from image_batches(
        data,
        batch_size,
        device=device,
        image_size=image_size,
        channels_last=channels_last,
        start=start,
        order=draws.order,
        augment_batch=draws.augment,
    )


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The RNG of one epoch's batch order and augmentation: a function of (seed, epoch) only,
    so a resumed run redraws exactly the batches the interrupted one would have seen."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def epoch_batches(
    data: dict,
    settings: RunSettings,
    *,
    epoch: int,
    device: torch.device,
    start: int = 0,
    precision: str = "fp32",
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The batches of training epoch `epoch` (0-based): shuffled, augmented as the run says.

    `data` holds either prepared images or cached features (a "features" key); `precision` is
    the job's resolved one (bf16 batches are channels_last). A pass over a split in order, to
    score it, is scoring.split_logits's (batching.split_batches).
    """
    generator = epoch_generator(settings.seed, epoch)
    if "features" in data:
        return feature_batches(data, settings.batch_size, generator=generator, device=device, start=start)
    return batches(
        data,
        settings.batch_size,
        shuffle=True,
        generator=generator,
        device=device,
        augment=settings.augment,
        image_size=settings.image_size,
        channels_last=use_channels_last(device, precision),
        start=start,
        translate_pixels=settings.translate,
        flip_phase=flip_phases(len(data["labels"]), settings.seed)
        if settings.augment == "alternating_flip"
        else None,
        epoch=epoch,
    )
