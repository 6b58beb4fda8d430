"""Which images a run sees: the test subset, the validation split and the training subset,
stratified by class and drawn with fixed seeds (docs/architecture.md).
"""

from __future__ import annotations

import torch

# Every run sees the same test subset (a fair comparison), whatever its own seed.
TEST_SUBSET_SEED = 0


# Every run and seed holds out the same validation images (`validation`), so that seeds and runs
# are compared on one held-out set; train_subset is then drawn, with the run's seed, from the rest.
VALIDATION_SPLIT_SEED = 0


def stratified_subset(labels: torch.Tensor, size: int | None, seed: int) -> torch.Tensor:
    """Sorted indices of `size` items with the class proportions of `labels` (all when size is None).

    Classes get their share by largest remainder, so the subset has exactly `size` items; which
    items is drawn with `seed`.
    """
    n = labels.numel()
    if size is None or size >= n:
        return torch.arange(n)
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=generator)
    classes, counts = labels.unique(return_counts=True)
    quota = counts.double() * size / n
    take = quota.floor().long()
    remainder = size - int(take.sum())
    take[torch.argsort(quota - take, descending=True, stable=True)[:remainder]] += 1
    shuffled = labels[order]
    picked = [order[shuffled == c][: int(k)] for c, k in zip(classes, take, strict=True)]
    return torch.cat(picked).sort().values


def train_validation_split(
    labels: torch.Tensor, *, validation: int, train_subset: int | None, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(train indices, validation indices) of a training split: both sorted, int64, disjoint.

    The validation images are a stratified `validation` of the split drawn with the fixed
    VALIDATION_SPLIT_SEED (the same images whatever the run's `seed`; none when validation is 0);
    the run trains on a stratified `train_subset` (all when None) of the other images, drawn
    with `seed`. With validation 0 the train indices are exactly `stratified_subset(labels,
    train_subset, seed)`. Train, the LR finder and the features step all split here.
    """
    n = labels.numel()
    if not 0 <= validation < n:
        raise ValueError(
            f"validation: {validation} held-out images of a training split of {n}; use 0 (off) or "
            f"fewer than {n} images"
        )
    held_out = stratified_subset(labels, validation, VALIDATION_SPLIT_SEED) if validation else torch.arange(0)
    rest = torch.ones(n, dtype=torch.bool)
    rest[held_out] = False
    rest = rest.nonzero().squeeze(1)
    return rest[stratified_subset(labels[rest], train_subset, seed)], held_out


def subset(data: dict, indices: torch.Tensor) -> dict:
    """The prepared (or cached-features) dict restricted to the images at `indices`.

    Cached features may hold only some images of their split (their `indices`, see
    docs/architecture.md); their rows are found by image index, and asking for an image they lack
    is an error. Other keys are kept as they are.
    """
    out = dict(data)
    if "indices" in data:
        have = data["indices"]
        rows = torch.searchsorted(have, indices).clamp(max=max(len(have) - 1, 0))
        missing = int((have[rows] != indices).sum()) if len(have) else len(indices)
        if missing:
            raise ValueError(
                f"the cached features lack {missing} of the {len(indices)} images asked for (they were "
                "made for other subsets); rerun the features step (snakemake does when the runs change)"
            )
        out.pop("indices")
        out["features"] = data["features"][rows]
        out["labels"] = data["labels"][indices]
        return out
    for key in ("images", "features", "labels"):
        if key in data:
            out[key] = data[key][indices]
    return out
