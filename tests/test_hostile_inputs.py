"""Odd and hostile inputs (issue 26): bounded memory, a clear error, never a silent wrong result.

The decompression bombs are made here in a few hundred bytes, and prepared in a subprocess under
a memory limit (RLIMIT_AS), so that a regression fails the test instead of filling the machine.
"""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import pytest
from PIL import Image

from cifarlab.data import prepare as data
from cifarlab.data.prepare import DataError

ROOT = Path(__file__).resolve().parents[1]
# What the prepare subprocess may allocate beyond what it holds once torch is imported (torch's
# CUDA build maps about 3 GiB of address space on import alone): far below any bomb here.
MEMORY_HEADROOM = 1536 << 20


def jpeg_declaring(width: int, height: int) -> bytes:
    """A tiny real JPEG whose frame header (SOF0) is rewritten to declare width x height pixels."""
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 40)).save(buffer, format="JPEG", quality=50)
    raw = bytearray(buffer.getvalue())
    sof = raw.index(b"\xff\xc0")  # marker, length (2), precision (1), height (2), width (2)
    raw[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(raw)


def png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header (IHDR) declares width x height RGB pixels, with one compressed row of data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = zlib.compress(b"\x00" * (1 + 3 * min(width, 4096)), 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def bmp_declaring(width: int, height: int) -> bytes:
    """A 1 x 1 BMP whose info header is rewritten to declare width x height pixels."""
    buffer = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buffer, format="BMP")
    raw = bytearray(buffer.getvalue())
    raw[18:26] = struct.pack("<ii", width, height)
    return bytes(raw)


BOMBS = {
    "jpg": jpeg_declaring(60000, 60000),  # decoded by torchvision, which has no bomb check
    "png": png_declaring(10000, 10000),  # above Pillow's limit, below twice it: Pillow only warns
    "bmp": bmp_declaring(60000, 60000),
}


def image_folder(root: Path, classes: tuple[str, ...] = ("cat", "dog"), per_split: int = 2) -> Path:
    """train/<class>/*.png and test/<class>/*.png of small solid images; returns root."""
    for split in ("train", "test"):
        for k, cls in enumerate(classes):
            folder = root / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_split):
                Image.new("RGB", (8, 8), (40 * k, 100, 20 * i)).save(folder / f"{i}.png")
    return root


def prepare_under_memory_limit(folder: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    """`prepare` of `folder` in a subprocess that may allocate MEMORY_HEADROOM beyond its imports."""
    code = textwrap.dedent(
        f"""
        import resource
        from cifarlab.data.prepare import prepare
        held = int(open("/proc/self/status").read().split("VmSize:")[1].split()[0]) * 1024
        resource.setrlimit(resource.RLIMIT_AS, (held + {MEMORY_HEADROOM}, held + {MEMORY_HEADROOM}))
        prepare({str(folder)!r}, {str(tmp_path / "train.pt")!r}, {str(tmp_path / "test.pt")!r}, None)
        """
    )
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path
    )


@pytest.mark.parametrize("kind", sorted(BOMBS))
def test_a_decompression_bomb_is_refused_before_decoding(tmp_path, kind):
    bomb = BOMBS[kind]
    assert len(bomb) < 1000  # a few hundred bytes
    width, height = declared = data.declared_size(bomb)
    assert width * height > data.MAX_IMAGE_PIXELS
    folder = image_folder(tmp_path / "mine")
    (folder / "train" / "dog" / f"bomb.{kind}").write_bytes(bomb)
    done = prepare_under_memory_limit(folder, tmp_path)
    assert done.returncode != 0
    assert f"{folder}/train/dog/bomb.{kind} declares {declared[0]} x {declared[1]} pixels" in done.stderr, (
        done.stderr[-3000:]
    )
    assert "MemoryError" not in done.stderr and not (tmp_path / "train.pt").exists()


def test_the_bomb_check_spares_ordinary_images():
    buffer = io.BytesIO()
    Image.new("RGB", (640, 480), (1, 2, 3)).save(buffer, format="JPEG")
    assert data.decode_image(buffer.getvalue(), 32, "photo.jpg").shape == (32, 32, 3)


def test_every_unreadable_image_is_listed_at_once(tmp_path):
    """A user fixes a folder in one pass: prepare names every bad file (up to a cap) and the count."""
    folder = image_folder(tmp_path / "mine")
    bad = [folder / "train" / "cat" / f"bad{i:02d}.jpg" for i in range(25)]
    for path in bad:
        path.write_bytes(b"this is a text file named .jpg")
    (folder / "test" / "dog" / "bomb.jpg").write_bytes(BOMBS["jpg"])
    with pytest.raises(DataError) as error:
        data.prepare(folder, tmp_path / "train.pt", tmp_path / "test.pt", None)
    message = str(error.value)
    assert message.startswith(f"26 image(s) of {folder} cannot be used"), message[:300]
    listed = [path for path in bad if f"cannot read image {path}:" in message]
    assert len(listed) == data.MAX_LISTED_BAD_IMAGES and "6 more" in message
    assert not (tmp_path / "train.pt").exists()


def test_bad_images_of_both_splits_are_listed(tmp_path):
    folder = image_folder(tmp_path / "mine")
    (folder / "train" / "cat" / "a.png").write_bytes(b"no image")
    (folder / "test" / "dog" / "b.png").write_bytes(b"no image either")
    with pytest.raises(DataError) as error:
        data.prepare(folder, tmp_path / "train.pt", tmp_path / "test.pt", None)
    assert f"{folder}/train/cat/a.png" in str(error.value) and f"{folder}/test/dog/b.png" in str(error.value)
