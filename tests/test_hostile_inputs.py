"""Odd and hostile inputs (issue 26): bounded memory, a clear error, never a silent wrong result.

The decompression bombs are made here in a few hundred bytes, and prepared in a subprocess under
a memory limit (RLIMIT_AS), so that a regression fails the test instead of filling the machine.
"""

from __future__ import annotations

import copy
import io
import json
import re
import resource
import struct
import subprocess
import sys
import textwrap
import zipfile
import zlib
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from cifarlab.config.schema import ConfigError
from cifarlab.config.validate import command_line_value, typed_overrides, validate_config
from cifarlab.core.files import save_torch
from cifarlab.core.yamlfiles import YAML_LOADER, YamlTooLarge, load_yaml
from cifarlab.data import archives, fetch
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


# kind -> (the file, the width and height its header declares)
BOMBS = {
    "jpg": (jpeg_declaring(60000, 60000), (60000, 60000)),  # decoded by torchvision: no bomb check
    "png": (png_declaring(10000, 10000), (10000, 10000)),  # above Pillow's limit, below twice it: it warns
    "bmp": (bmp_declaring(60000, 60000), (60000, 60000)),
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


def run_under_memory_limit(code: str, cwd: Path) -> subprocess.CompletedProcess:
    """Python `code` in a subprocess that may allocate MEMORY_HEADROOM beyond what it holds after
    importing torch and cifarlab (a regression then fails with MemoryError, not a full machine)."""
    limited = textwrap.dedent(
        f"""
        import resource
        import torch, cifarlab.data.prepare, cifarlab.config.validate, cifarlab.study.status
        held = int(open("/proc/self/status").read().split("VmSize:")[1].split()[0]) * 1024
        resource.setrlimit(resource.RLIMIT_AS, (held + {MEMORY_HEADROOM}, held + {MEMORY_HEADROOM}))
        """
    )
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-c", limited + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=cwd,
    )


def prepare_under_memory_limit(folder: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    """`prepare` of `folder` under the memory limit."""
    train, test = str(tmp_path / "train.pt"), str(tmp_path / "test.pt")
    code = f"from cifarlab.data.prepare import prepare\nprepare({str(folder)!r}, {train!r}, {test!r}, None)"
    return run_under_memory_limit(code, tmp_path)


@pytest.mark.parametrize("kind", sorted(BOMBS))
def test_a_decompression_bomb_is_refused_before_decoding(tmp_path, kind):
    bomb, (width, height) = BOMBS[kind]
    assert len(bomb) < 1000  # a few hundred bytes
    assert data.declared_size(bomb) == (width, height) and width * height > data.MAX_IMAGE_PIXELS
    folder = image_folder(tmp_path / "mine")
    (folder / "train" / "dog" / f"bomb.{kind}").write_bytes(bomb)
    done = prepare_under_memory_limit(folder, tmp_path)
    assert done.returncode != 0
    assert f"{folder}/train/dog/bomb.{kind} declares {width} x {height} pixels" in done.stderr, done.stderr[
        -3000:
    ]
    assert "MemoryError" not in done.stderr and not (tmp_path / "train.pt").exists()


def zip_declaring(folder: Path, target: Path, member: str, size: int) -> Path:
    """A zip of `folder` whose `member` declares `size` bytes (its headers rewritten): an archive bomb."""
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(folder).as_posix())
    raw = bytearray(target.read_bytes())
    name = member.encode()
    # the local header (size at byte 22, name at 30) and the central directory's (24, 46)
    for signature, size_at, name_at in ((b"PK\x03\x04", 22, 30), (b"PK\x01\x02", 24, 46)):
        at = raw.find(signature)
        while raw[at + name_at : at + name_at + len(name)] != name:
            at = raw.find(signature, at + 4)
        raw[at + size_at : at + size_at + 4] = struct.pack("<I", size)
    target.write_bytes(bytes(raw))
    return target


def test_an_archive_member_declaring_gigabytes_is_refused_before_reading(tmp_path):
    folder = image_folder(tmp_path / "mine")
    path = zip_declaring(folder, tmp_path / "mine.zip", "train/dog/1.png", 4_000_000_000)
    assert zipfile.ZipFile(path).getinfo("train/dog/1.png").file_size == 4_000_000_000
    with pytest.raises(DataError, match=r"mine\.zip:train/dog/1\.png declares 4,000,000,000 bytes"):
        data.prepare(path, tmp_path / "train.pt", tmp_path / "test.pt", None)


def test_a_folder_file_over_the_member_limit_is_refused_saying_how_to_fix_it(tmp_path, monkeypatch):
    """A folder source is checked as an archive is: from walk_folder's stat, before any read."""
    folder = image_folder(tmp_path / "mine")
    monkeypatch.setattr(archives, "MAX_MEMBER_BYTES", 10)
    fix = r"Remove that file from the archive, or raise cifarlab\.data\.archives\.MAX_MEMBER_BYTES"
    with pytest.raises(DataError, match=rf"mine/test/cat/0\.png declares \d+ bytes.*{fix}"):
        archives.Archive(folder)
    with pytest.raises(DataError, match=rf"mine/test/cat/0\.png declares \d+ bytes.*{fix}"):
        fetch.pack_directory(folder, tmp_path / "packed.tar")
    assert not (tmp_path / "packed.tar").exists()


def test_the_pixel_limit_is_read_when_checking_not_when_defining(monkeypatch):
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64)).save(buffer, format="PNG")
    monkeypatch.setattr(data, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(DataError, match="more than the limit of 1,000 pixels"):
        data.check_declared_size(buffer.getvalue(), "small.png")
    data.check_declared_size(buffer.getvalue(), "small.png", limit=64 * 64)


def test_threads_reading_headers_leave_pillows_limit_as_it_was(monkeypatch):
    """Two threads in declared_size at once: without the lock the second saves the first's None
    as the value to restore, and Pillow's bomb check stays off for the rest of the process."""
    import threading
    import time

    opened = Image.open

    def slow_open(*args, **kwargs):  # widen the window between the save and the restore
        time.sleep(0.01)
        return opened(*args, **kwargs)

    monkeypatch.setattr(Image, "open", slow_open)
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="PNG")
    before = Image.MAX_IMAGE_PIXELS
    threads = [threading.Thread(target=data.declared_size, args=(buffer.getvalue(),)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert Image.MAX_IMAGE_PIXELS == before


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
    (folder / "test" / "dog" / "bomb.jpg").write_bytes(BOMBS["jpg"][0])
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


# --- Config: YAML that expands, values that are too long to print ---------------------------

# An 11-line overlay of nested aliases under saliency: runs: (issue 26: its like grew to 19.6 GB):
# 10 ** 9 run names once expanded.
ALIAS_BOMB = (
    "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n"
    + "".join(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]\n" for i in range(1, 9))
    + "saliency:\n  runs: *a8\n"
)


def test_an_alias_bomb_is_refused_before_it_is_expanded(tmp_path):
    assert len(ALIAS_BOMB.splitlines()) == 11 and len(ALIAS_BOMB) < 1000
    with pytest.raises(YamlTooLarge, match="more than 2,000,000 values"):
        load_yaml("bomb.yaml", text=ALIAS_BOMB)
    # the status command reads overlays with the same loader (its own merge would expand them)
    (tmp_path / "bomb.yaml").write_text(ALIAS_BOMB)
    done = run_under_memory_limit(
        f"""
        from pathlib import Path
        from cifarlab.study.status import load_config
        load_config([{str(tmp_path / "bomb.yaml")!r}], [], Path({str(ROOT)!r}))
        """,
        tmp_path,
    )
    assert "ConfigError" in done.stderr and "more than 2,000,000 values" in done.stderr, done.stderr[-2000:]


def test_a_config_snakemake_loaded_with_shared_aliases_is_refused_before_it_is_walked(tmp_path):
    """Snakemake builds aliases as shared objects; validation counts them before walking the config."""
    done = run_under_memory_limit(
        f"""
        import yaml
        from cifarlab.config.validate import validate_config
        config = yaml.safe_load(open({str(ROOT / "config" / "demo.yaml")!r}))
        config.update(yaml.safe_load({ALIAS_BOMB!r}))
        validate_config(config)
        """,
        tmp_path,
    )
    assert "ConfigError" in done.stderr and "more than 2,000,000 values" in done.stderr, done.stderr[-2000:]


def test_snakemake_stops_at_an_overlay_alias_bomb_before_walking_it(tmp_path):
    """Snakemake loads --configfile itself; its aliases stay shared, and validation counts them first
    (README: what Snakemake's own loading can and cannot be protected from)."""
    (tmp_path / "bomb.yaml").write_text(ALIAS_BOMB)
    limit = 6 << 30  # address space: Snakemake and its imports (no torch) fit well within
    done = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--cores", "1", "report", "--configfile",
         "config/demo.yaml", str(tmp_path / "bomb.yaml")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (limit, limit)),
    )  # fmt: skip
    assert done.returncode != 0
    output = done.stdout + done.stderr  # Snakemake prints its error on stdout when not on a terminal
    assert "more than 2,000,000 values once its aliases expand" in output, output[-2000:]


def test_recursive_and_deep_yaml_is_refused():
    with pytest.raises(YamlTooLarge, match="contains itself"):
        load_yaml("loop.yaml", text="runs: &r [1, *r]\n")
    with pytest.raises(YamlTooLarge, match="more than 50 levels"):
        load_yaml("deep.yaml", text="a: " + "[" * 60 + "]" * 60 + "\n")
    assert load_yaml("plain.yaml", text="a: &x {b: 1}\nc: *x\n") == {"a": {"b": 1}, "c": {"b": 1}}


@pytest.mark.parametrize("loader", [yaml.SafeLoader, yaml.BaseLoader, YAML_LOADER])
def test_brackets_nested_past_the_recursion_limit_are_refused_not_a_traceback(loader):
    """PyYAML's Python reader recurses once per level: 2,000 levels passed Python's recursion
    limit (libyaml's reader stops at 1,000 with a YAML error, which says where)."""
    text = "a: " + "[" * 2000 + "]" * 2000 + "\n"
    with pytest.raises((YamlTooLarge, yaml.YAMLError)) as error:
        load_yaml("deep.yaml", text=text, loader=loader)
    if isinstance(error.value, YamlTooLarge):
        assert "deep.yaml holds values nested deeper than the YAML reader can follow" in str(error.value)
        assert "remove the extra brackets or indentation" in str(error.value)


def test_an_integer_too_long_to_read_is_refused_naming_the_file_and_the_fix():
    with pytest.raises(YamlTooLarge, match=r"big\.yaml holds an integer of more than 4,300 digits.*quote it"):
        load_yaml("big.yaml", text="epochs: " + "9" * 5000 + "\n")
    assert load_yaml("quoted.yaml", text=f"epochs: '{'9' * 5000}'\n") == {"epochs": "9" * 5000}


def test_command_line_values_too_deep_or_too_long_are_config_errors_or_stay_text():
    deep, long = "[" * 2000 + "]" * 2000, "9" * 5000
    overrides = {"runs": {"x": {"epochs": long}}, "other": deep}
    assert typed_overrides(overrides) == overrides  # text: the schema check says what is wrong with it
    with pytest.raises(ConfigError, match="--config holds values nested deeper"):
        command_line_value(deep)


@pytest.fixture
def lab_config() -> dict:
    return load_yaml(ROOT / "config" / "config.yaml")


def with_runs(config: dict, runs: dict) -> dict:
    """A copy of `config` with only `runs`, and no LR finder or saliency runs named."""
    config = copy.deepcopy(config)
    config["runs"] = runs
    config["lr_finder"] = {"runs": []}
    config["saliency"] = {"runs": []}
    return config


def config_error(config: dict) -> str:
    with pytest.raises(ConfigError) as error:
        validate_config(config)
    return str(error.value)


def test_a_long_value_is_cut_in_the_message_saying_how_long_it_was(lab_config):
    lab_config["defaults"]["optimizer"] = "adam" * 250_000
    message = config_error(lab_config)
    assert len(message) < 2000 and "a text of 1,000,000 characters" in message, message[:3000]


def test_a_long_list_of_runs_is_cut_in_the_message(lab_config):
    runs = {"simple_cnn": {"model": "simple_cnn", "sweep": {"epochs": list(range(1, 8001))}}}
    config = with_runs(lab_config, runs)
    config["saliency"] = {"runs": ["no_such_run"]}
    message = config_error(config)
    assert len(message) < 2000 and "(8,000 in all)" in message, message[:3000]


# --- Degenerate data: refused or labelled, never scored as if it were normal ------------------


def test_one_class_is_refused_at_prepare(tmp_path):
    folder = image_folder(tmp_path / "mine", classes=("cat",))
    with pytest.raises(DataError, match="has 1 class .*at least two classes"):
        data.prepare(folder, tmp_path / "train.pt", tmp_path / "test.pt", None)
    assert not (tmp_path / "train.pt").exists()


def test_a_class_without_test_images_is_prepared_and_named(tmp_path, caplog):
    folder = image_folder(tmp_path / "mine", classes=("cat", "dog", "emu"))
    for path in (folder / "test" / "emu").iterdir():
        path.unlink()
    (folder / "test" / "emu").rmdir()
    result = data.prepare(folder, tmp_path / "train.pt", tmp_path / "test.pt", None)
    assert result["test"]["classes"] == ["cat", "dog", "emu"]
    assert any("['emu'] have no test images" in r.getMessage() for r in caplog.records), caplog.text


def test_per_class_accuracy_leaves_out_a_class_without_test_images():
    from cifarlab.training.evaluate import per_class_accuracy

    confusion = torch.tensor([[3, 1, 0], [0, 0, 0], [0, 2, 2]])  # rows: true cat, dog, emu
    accuracy, untested = per_class_accuracy(confusion, ["cat", "dog", "emu"])
    assert accuracy == {"cat": 75.0, "emu": 50.0} and untested == ["dog"]


def test_saliency_skips_a_class_without_test_images(tmp_path, caplog):
    from cifarlab.analysis.saliency import write_sample

    labels = torch.tensor([0, 0, 2, 2, 2])  # class 1 has none
    save_torch({"images": torch.zeros(5, 3, 8, 8, dtype=torch.uint8), "labels": labels,
                "classes": ["cat", "dog", "emu"]}, tmp_path / "test.pt")  # fmt: skip
    sample = write_sample(tmp_path / "test.pt", tmp_path / "sample.json", images_per_class=1)
    assert sample["labels"] == [0, 2] and sample["classes_without_test_images"] == ["dog"]
    assert "['dog'] have no test images" in caplog.text


def test_the_report_says_no_test_images():
    from cifarlab.report.page import _data_html

    counts = {"train": {"cat": 5, "dog": 4}, "test": {"cat": 2, "dog": 0}}
    page = _data_html({"record": {}, "counts": counts})
    assert "0 (no test images)" in page and page.count("no test images") == 1


@pytest.mark.parametrize("name", ["...", "..a"])
def test_dot_only_class_names_are_refused_not_dropped(tmp_path, name):
    folder = image_folder(tmp_path / "mine", classes=("cat", name))
    (folder / "train" / ".ipynb_checkpoints").mkdir()  # hidden junk stays ignored
    with pytest.raises(DataError, match=rf"\['{re.escape(name)}'\] start with '\.\.'"):
        data.prepare(folder, tmp_path / "train.pt", tmp_path / "test.pt", None)
    with pytest.raises(DataError, match="start with '..'"):  # in an archive as well
        fetch.download(str(folder), tmp_path / "mine.tar", tmp_path / "mine.json")


# --- Names that work everywhere --------------------------------------------------------------


def test_class_names_are_plotted_as_text_in_a_font_that_has_them(tmp_path, caplog):
    from cifarlab.plots import style
    from cifarlab.plots.confusion import plot_confusion

    classes = ["coin_$1_or_$2", "猫猫", "dog"]  # mathtext crashed on the first; the second drew as boxes
    metrics = {"run": "simple_cnn", "status": "ok", "classes": classes, "test_accuracy": 50.0,
               "confusion_matrix": [[1, 1, 0], [0, 1, 0], [0, 0, 0]]}  # fmt: skip
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    plot_confusion(tmp_path / "metrics.json", tmp_path / "confusion.png")
    assert Image.open(tmp_path / "confusion.png").size[0] > 100
    # a font that has 猫 was chosen, or the missing characters were named in a note
    families = style.fonts_for(["猫猫"])
    noted = "no font found here has the characters '猫'" in caplog.text
    assert families or noted, (families, caplog.text)
    assert not (families and noted)


@pytest.mark.parametrize("source", ["/home/me/猫猫/", "/home/me/猫猫.zip", "/data/---/"])
def test_a_source_without_ascii_letters_gets_a_usable_name(source):
    from cifarlab.core.paths import RESERVED_NAMES
    from cifarlab.data.catalog import source_name

    name = source_name(source)
    assert name and name not in RESERVED_NAMES and any(c.isalnum() for c in name), name
    assert name.isascii() and source_name(source) == name  # the same each time
    assert source_name("/home/me/猫猫/") != source_name("/home/me/犬犬/")


def test_names_longer_than_the_file_system_allows_are_config_errors(lab_config):
    from cifarlab.data.catalog import MAX_NAME_BYTES

    message = config_error(with_runs(lab_config, {"r" * 260: {"model": "simple_cnn"}}))
    assert "is 260 bytes long" in message and f"at most {MAX_NAME_BYTES} bytes" in message, message
    long = copy.deepcopy(lab_config)
    long["datasets"] = [{"name": "d" * 150, "source": "synthetic"}]
    assert "is 150 bytes long" in config_error(long)
    # a sweep's names are the entry's name and its values
    sweep = {"model": "simple_cnn", "sweep": {"optimizer": ["sgd", "adam"]}}
    validate_config(with_runs(lab_config, {"n" * 95: sweep}))  # `-adam`: 100 bytes, fine
    assert "is 101 bytes long" in config_error(with_runs(lab_config, {"n" * 96: sweep}))
