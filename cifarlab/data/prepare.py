"""Data stage: read images safely from a fetched archive (cifarlab.data.fetch), pack tensors.

Sources (see docs/data.md): an http(s) URL, a local path or file:// URL of an archive, an
image-folder directory (`train/<class>/*`, `test/<class>/*`, packed once into a deterministic
.tar), or `synthetic`. Archives are never extracted: zip and tar members are checked (no `..`,
absolute paths or links) and decoded straight from the archive.

Two kinds of layout are read (recognised in cifarlab.data.sources): the official CIFAR-10 and CIFAR-100
python archives (`cifar-10-batches-py/`, `cifar-100-python/`; CIFAR-100 with its fine or coarse
labels) and image folders, each possibly inside one top folder of the archive.
"""

from __future__ import annotations

import io
import logging
import pickle
import re
import threading
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont, ImageOps

from cifarlab.core.files import atomic_path, save_torch
from cifarlab.data.archives import Archive, find_image_folder

# Naming a source, knowing it by its content and recognising its layout live in cifarlab.data.sources
# (torch-free: the workflow reads them while it plans); DataError too, which both raise.
from cifarlab.data.sources import (
    CifarLayout,
    DataError,
    check_labels,
    find_cifar_python,
    local_path,
)

try:  # JPEG via libjpeg-turbo without PIL's Python-level parsing: 2-3x faster on CIFAR-sized images,
    # the same pixels bit for bit (tests/test_data.py checks). PIL decodes everything else, and all
    # formats once torchvision drops its (deprecated) decoders.
    from torchvision.io import ImageReadMode, decode_jpeg
except ImportError:  # pragma: no cover
    decode_jpeg = None

log = logging.getLogger(__name__)

# Below this many images a process pool costs more than it saves.
POOL_MIN_IMAGES = 4096
POOL_CHUNK = 2000


# --- Decoding -----------------------------------------------------------------------------


def _decode_rgb(data: bytes) -> np.ndarray:
    """Any format PIL reads -> uint8 H x W x 3, at its own size."""
    if decode_jpeg is not None and data[:3] == b"\xff\xd8\xff":
        with warnings.catch_warnings():  # deprecated in torchvision 0.29, the fallback below remains
            warnings.simplefilter("ignore", DeprecationWarning)
            image = decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
        return image.permute(1, 2, 0).numpy()
    with Image.open(io.BytesIO(data)) as image:
        if image.mode.startswith("I"):  # 16-bit (I;16*) or 32-bit integer greyscale
            return _to_8_bit(np.asarray(image), image.mode)
        return np.asarray(image.convert("RGB") if image.mode != "RGB" else image)  # convert copies


def _to_8_bit(values: np.ndarray, mode: str) -> np.ndarray:
    """Integer greyscale -> uint8 H x W x 3, scaled (not clipped) from its bit depth.

    PIL's convert("RGB") clips at 255, so a mid-grey 16-bit image would come out white. `I;16*`
    is 16-bit; `I` (32-bit) is taken as 16-bit when its values fit in 16 bits (as PNG and TIFF
    scans give), else as full 32-bit range.
    """
    values = values.astype(np.int64)
    top = 65535 if mode.startswith("I;16") or values.max(initial=0) <= 65535 else 2**32 - 1
    if mode == "I" and values.max(initial=0) <= 255:
        top = 255  # an 8-bit image stored as 32-bit integers
    grey = ((values.clip(0, top) * 255 + top // 2) // top).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1)


# The most pixels an image may declare before it is decoded: Pillow's default MAX_IMAGE_PIXELS
# (89,478,485, about 9459 x 9459; 256 MiB as 8-bit RGB), stated here so that a change of Pillow's
# global setting elsewhere changes nothing. Checked from the header for every format, JPEG
# included (torchvision's decode_jpeg has no such check: a 629-byte JPEG declaring 60000 x 60000
# pixels would allocate 10 GB).
MAX_IMAGE_PIXELS = 89_478_485
# prepare lists at most this many unreadable images (and says how many there are in all).
MAX_LISTED_BAD_IMAGES = 20
# Held while declared_size switches Pillow's global check off and back (see there).
_PILLOW_LIMIT_LOCK = threading.Lock()


def declared_size(data: bytes) -> tuple[int, int]:
    """(width, height) in pixels that an image file's header declares, without decoding it.

    Pillow's `Image.open` is lazy: it reads the header only. Its own bomb check (a warning above
    MAX_IMAGE_PIXELS, an error above twice that, without the sizes) is off for this call, as
    `check_declared_size` compares and names the size itself.

    The switch is of a global, so it is made under a module-level lock: two threads calling this
    function never save each other's None as the value to restore. The lock does not protect other
    threads' `Image.open` (elsewhere, not through this function): one of those running meanwhile
    would open without Pillow's check. That is why `prepare` decodes in processes, one thread each.
    """
    with _PILLOW_LIMIT_LOCK:
        pillow_limit = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            with Image.open(io.BytesIO(data)) as image:
                return image.size
        finally:
            Image.MAX_IMAGE_PIXELS = pillow_limit


def check_declared_size(data: bytes, name: str, limit: int | None = None) -> None:
    """Refuse an image whose header declares more than `limit` pixels (default: MAX_IMAGE_PIXELS,
    read at the call, so that raising the module's constant takes effect) with a DataError naming
    the file and its size, before a decoder allocates them: a few hundred bytes can declare gigabytes."""
    limit = MAX_IMAGE_PIXELS if limit is None else limit
    width, height = declared_size(data)
    if width * height > limit:
        raise DataError(
            f"image {name} declares {width} x {height} pixels ({width * height / 1e6:,.0f} megapixels, "
            f"{width * height * 3 / 2**30:,.1f} GiB as RGB), more than the limit of {limit:,} pixels "
            "(cifarlab.data.prepare.MAX_IMAGE_PIXELS): refusing to decode it (a decompression bomb, or "
            "a photo far larger than a training image needs). Remove it, or shrink it and rerun"
        )


def decode_image(data: bytes, size: int, name: str) -> np.ndarray:
    """One image file's bytes -> uint8 array size x size x 3 (RGB).

    Grayscale, palette, RGBA (alpha dropped, as torchvision's loader does) and CMYK become RGB.
    Another size is resized keeping the aspect ratio (bilinear, antialiased) and centre-cropped
    to a square. A file whose header declares more than MAX_IMAGE_PIXELS is refused before it is
    decoded. An unreadable or oversized file raises DataError naming it.
    """
    try:
        check_declared_size(data, name)
        pixels = _decode_rgb(data)
        if pixels.shape[:2] != (size, size):
            image = ImageOps.fit(Image.fromarray(pixels), (size, size), method=Image.Resampling.BILINEAR)
            pixels = np.asarray(image)
        return pixels
    except DataError:
        raise
    except Exception as error:  # decoders raise many kinds for a corrupt file; all mean "unreadable"
        # PIL names the in-memory buffer (`<_io.BytesIO object at 0x...>`), not the file: drop it.
        why = re.sub(r"\s*<_io\.BytesIO object at 0x[0-9a-fA-F]+>", "", str(error))
        raise DataError(
            f"cannot read image {name}: {type(error).__name__}: {why}. Remove or replace that file and rerun"
        ) from None


def _decode_chunk(items: list[tuple[str, bytes]], size: int) -> tuple[np.ndarray, list[str]]:
    """(uint8 N x size x size x 3, the messages of the images that could not be read); an
    unreadable image is left black in the array, so that every bad file is found in one pass."""
    array = np.zeros((len(items), size, size, 3), dtype=np.uint8)
    problems = []
    for i, (name, data) in enumerate(items):
        try:
            array[i] = decode_image(data, size, name)
        except DataError as error:
            problems.append(str(error))
    return array, problems


def decode_images(
    items: list[tuple[str, bytes]], size: int, workers: int = 1
) -> tuple[torch.Tensor, list[str]]:
    """(name, bytes) pairs -> (uint8 tensor N x 3 x size x size in order, the messages of the images
    that could not be read: empty when all were); decoded in a process pool when there are many."""
    if not items:
        return torch.empty(0, 3, size, size, dtype=torch.uint8), []
    if workers <= 1 or len(items) < POOL_MIN_IMAGES:
        array, problems = _decode_chunk(items, size)
    else:
        chunks = [items[i : i + POOL_CHUNK] for i in range(0, len(items), POOL_CHUNK)]
        with ProcessPoolExecutor(workers) as pool:
            decoded = list(pool.map(_decode_chunk, chunks, [size] * len(chunks)))
        array = np.concatenate([chunk for chunk, _ in decoded])
        problems = [problem for _, found in decoded for problem in found]
    return torch.from_numpy(array).permute(0, 3, 1, 2).contiguous(), problems


def unreadable_images_error(problems: list[str], where: str) -> DataError:
    """One error listing the unreadable images (the first MAX_LISTED_BAD_IMAGES) and their count,
    so that a folder is fixed in one pass."""
    listed = problems[:MAX_LISTED_BAD_IMAGES]
    more = len(problems) - len(listed)
    head = f"{len(problems)} image(s) of {where} cannot be used" + (
        f" (the first {len(listed)} listed, {more} more)" if more else ""
    )
    lines = "\n".join(f"  - {problem}" for problem in listed)
    return DataError(f"{head}:\n{lines}\nRemove or replace those files and rerun")


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles CIFAR batches but nothing that could run code: only numpy arrays are allowed.

    A pickle can call any importable function; an archive from the internet must not be able
    to, so every global it names is checked against this list.
    """

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # bytes pickled by Python 3 with protocol 2
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise DataError(
                f"a CIFAR batch refers to {module}.{name}; only numpy arrays are allowed (refusing "
                "to run code from the archive)"
            )
        if module == "numpy.core.multiarray":  # the official batches were pickled by numpy 1
            module = "numpy._core.multiarray"
        return super().find_class(module, name)


def _load_batch(data: bytes, name: str) -> dict:
    try:
        batch = _BatchUnpickler(io.BytesIO(data), encoding="bytes").load()
    except DataError as error:
        raise DataError(f"{name}: {error}") from None
    except Exception as error:
        raise DataError(f"cannot read CIFAR batch {name}: {type(error).__name__}: {error}") from None
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}


def _cifar_split(
    batches: list[dict], names: list[str], size: int, label_key: str
) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = [], []
    for batch, name in zip(batches, names, strict=True):
        data = np.asarray(batch.get("data"))
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or data.dtype != np.uint8:
            raise DataError(f"{name}: 'data' should be uint8 N x 3072, got {data.dtype} {data.shape}")
        if label_key not in batch:
            raise DataError(f"{name}: no {label_key!r} in the batch (it has {sorted(batch)})")
        images.append(torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()))
        labels.append(torch.as_tensor(batch[label_key], dtype=torch.int64))
    images = torch.cat(images)
    if size != 32:
        from torchvision.transforms.v2.functional import resize

        # Bilinear with antialiasing, chunked to bound memory: matches PIL's resize of image folders.
        images = torch.cat([resize(c, [size, size], antialias=True) for c in images.split(4096)])
    return images, torch.cat(labels)


def read_cifar_python(
    archive: Archive, layout: CifarLayout, prefix: str, size: int, labels: str = "fine"
) -> tuple[list[str], dict]:
    """(classes, {"train": (images, labels), "test": ...}) from an official CIFAR python archive.

    layout, prefix: what cifarlab.data.sources.find_cifar_python found; labels: one of `layout.labels`
    (CIFAR-100: "fine", 100 classes, or "coarse", its 20 superclasses), the batches' labels and
    the meta file's class names of that kind.
    """
    check_labels(labels, layout.labels, archive.where, f"the {layout.title} python archive")
    label_key, names_key = layout.labels[labels]
    names = [prefix + f for f in layout.files]
    batches = {
        n: _load_batch(d, archive.entry(n)) for n, d in zip(names, archive.read_many(names), strict=True)
    }
    meta = batches[prefix + layout.meta]
    if names_key not in meta:
        raise DataError(f"{archive.entry(prefix + layout.meta)}: no {names_key!r} (it has {sorted(meta)})")
    classes = [c.decode() if isinstance(c, bytes) else str(c) for c in meta[names_key]]
    splits = {}
    for split, files in (("train", layout.train), ("test", layout.test)):
        entries = [archive.entry(prefix + f) for f in files]
        splits[split] = _cifar_split([batches[prefix + f] for f in files], entries, size, label_key)
        found = splits[split][1]
        if len(found) and not 0 <= int(found.min()) <= int(found.max()) < len(classes):
            raise DataError(
                f"{', '.join(entries)}: {label_key} run from {int(found.min())} to {int(found.max())}, "
                f"but {names_key} names {len(classes)} classes; the archive is not a consistent "
                f"{layout.title} archive"
            )
    return classes, splits


def read_image_folder(archive: Archive, size: int, workers: int = 1) -> tuple[list[str], dict]:
    """(classes, {"train": (images, labels), "test": ...}) from an image-folder layout."""
    classes, layout = find_image_folder(archive.names, archive.where, archive.dirs)
    splits, problems = {}, []
    for split in ("train", "test"):
        names, labels = [], []
        for label, cls in enumerate(classes):
            files = layout[split].get(cls, [])
            names += files
            labels += [label] * len(files)
        items = [(archive.entry(n), d) for n, d in zip(names, archive.read_many(names), strict=True)]
        images, found = decode_images(items, size, workers)
        problems += found
        splits[split] = (images, torch.tensor(labels, dtype=torch.int64))
    if problems:  # after both splits: every bad file in one message
        raise unreadable_images_error(problems, archive.where)
    return classes, splits


def read_dataset(
    path: str | Path,
    size: int,
    workers: int = 1,
    shown_as: str | None = None,
    folder: bool | None = None,
    labels: str = "fine",
) -> tuple[list[str], dict]:
    """(classes, {"train": (uint8 N x 3 x size x size, int64 N), "test": ...}) of any accepted layout.

    shown_as, folder: how messages name the source (see Archive). labels: "fine", or "coarse"
    (CIFAR-100's 20 superclasses; a DataError for any other layout).
    """
    with Archive(path, shown_as, folder) as archive:
        found = find_cifar_python(archive.names, archive.where)
        if found is not None:
            return read_cifar_python(archive, *found, size, labels)
        check_labels(labels, ("fine",), archive.where, "an image folder")  # before decoding anything
        return read_image_folder(archive, size, workers)


# --- Prepare ------------------------------------------------------------------------------


def channel_stats(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std (float32 [3], pixel values in [0, 1]) of uint8 N x 3 x H x W.

    From a histogram of the 256 byte values per channel: exact, and no float copy of the data.
    """
    values = torch.arange(256, dtype=torch.float64) / 255
    means, stds = [], []
    for channel in range(images.shape[1]):
        counts = torch.bincount(images[:, channel].flatten(), minlength=256).to(torch.float64)
        n = counts.sum()
        mean = (counts * values).sum() / n
        means.append(mean)
        stds.append(((counts * (values - mean) ** 2).sum() / (n - 1).clamp_min(1)).sqrt())  # unbiased
    return torch.stack(means).float(), torch.stack(stds).float()


def plot_samples(
    images: torch.Tensor,
    labels: torch.Tensor,
    classes: list[str],
    path: str | Path,
    per_class: int = 10,
    max_classes: int = 20,
    seed: int = 0,
    scale: int = 2,
) -> None:
    """A grid of `per_class` random training images (fixed seed) per class, one labelled row each.

    images: uint8 N x 3 x H x W; each image is drawn `scale` x larger (nearest neighbour). Drawn
    with PIL, not matplotlib: `prepare` then runs no plotting code, so a change of the figures'
    style (cifarlab.plots.style) never reruns the data steps and everything after them.
    """
    shown = classes[:max_classes]
    generator = torch.Generator().manual_seed(seed)
    height, width = images.shape[2] * scale, images.shape[3] * scale
    font = ImageFont.load_default()
    label_width = 8 + max(int(font.getlength(c)) for c in shown)
    title_height, gap = 16, 2
    title = "training samples" + (
        f" (first {max_classes} of {len(classes)} classes)" if len(classes) > max_classes else ""
    )
    canvas = Image.new(
        "RGB",
        (
            max(label_width + per_class * (width + gap), int(font.getlength(title)) + 8),
            title_height + len(shown) * (height + gap),
        ),
        "white",
    )
    draw = ImageDraw.Draw(canvas)
    draw.text((4, 2), title, fill="black", font=font)
    for label, cls in enumerate(shown):
        top = title_height + label * (height + gap)
        draw.text((4, top + height // 2 - 5), cls, fill="black", font=font)
        index = (labels == label).nonzero().flatten()
        index = index[torch.randperm(index.numel(), generator=generator)[:per_class]]
        for k, i in enumerate(index.tolist()):  # a class may have no training images in a tiny dataset
            tile = Image.fromarray(images[i].permute(1, 2, 0).contiguous().numpy()).resize(
                (width, height), Image.NEAREST
            )
            canvas.paste(tile, (label_width + k * (width + gap), top))
    with atomic_path(path) as tmp:
        canvas.save(tmp, format="PNG")


def check_classes(classes: list[str], test_labels: torch.Tensor, where: str) -> None:
    """Refuse data of fewer than two classes; warn of each class without test images.

    One class would score 100 % with loss 0 for every model, a result that measures nothing. A
    class without test images is allowed (a small folder may lack them): it is named here, in
    the report ("no test images"), left out of per-class accuracy and skipped by saliency.
    """
    if len(classes) < 2:
        raise DataError(
            f"{where} has {len(classes)} class ({classes}): a classifier needs at least two classes, "
            "or every model scores 100 % and learns nothing. Add a second class folder under train/ "
            "and test/"
        )
    counts = torch.bincount(test_labels, minlength=len(classes)).tolist()
    untested = [cls for cls, n in zip(classes, counts, strict=True) if n == 0]
    if untested:
        log.warning(
            "%s: class(es) %s have no test images: they are trained on, left out of per-class "
            "accuracy and skipped by saliency; add test/<class>/ images to measure them",
            where,
            untested,
        )


def prepare(
    archive: str | Path,
    train_out: str | Path,
    test_out: str | Path,
    samples_out: str | Path | None,
    image_size: int = 32,
    source: str | None = None,
    workers: int = 1,
    labels: str = "fine",
) -> dict[str, dict]:
    """Decode an archive once into the `results/data/<dataset>/{train,test}.pt` files.

    labels: which labels and class names of a CIFAR-100 archive ("fine": 100 classes, "coarse":
    20); other layouts have only "fine". Each file holds {"images": uint8 N x 3 x S x S,
    "labels": int64 N, "classes": list[str], "mean", "std": float32 [3] of the training set in
    [0, 1] units, "source": str} (docs/architecture.md). Both are written atomically. Returns the two dicts.
    """
    start = time.perf_counter()
    # Messages name the user's own folder or archive, not its copy under resources/.
    local = None if source in (None, "synthetic") else local_path(source)
    shown = (str(local), local.is_dir()) if local is not None and local.exists() else (None, None)
    classes, splits = read_dataset(archive, image_size, workers, *shown, labels=labels)
    for split, (images, _) in splits.items():
        if len(images) == 0:
            raise DataError(f"{shown[0] or archive}: the {split} split has no images")
    check_classes(classes, splits["test"][1], shown[0] or str(archive))
    mean, std = channel_stats(splits["train"][0])
    result = {}
    for split, out in (("train", train_out), ("test", test_out)):
        images, labels = splits[split]
        result[split] = {
            "images": images,
            "labels": labels,
            "classes": classes,
            "mean": mean,
            "std": std,
            "source": source or str(archive),
        }
        save_torch(result[split], out)
    if samples_out is not None:
        plot_samples(splits["train"][0], splits["train"][1], classes, samples_out)
    log.info(
        "prepared %s: %d train, %d test images of %d classes at %d px in %.1f s; mean %s std %s",
        archive,
        len(splits["train"][0]),
        len(splits["test"][0]),
        len(classes),
        image_size,
        time.perf_counter() - start,
        [round(v, 4) for v in mean.tolist()],
        [round(v, 4) for v in std.tolist()],
    )
    return result
