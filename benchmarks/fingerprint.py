"""What identifying a local source by its content costs, beside what `prepare` costs, in one run.

    python benchmarks/fingerprint.py ../shared/datasets/cifar10-jpeg.zip --folder /tmp/cifar10-folder

Times `cifarlab.data.sources.source_fingerprint` (run by the Snakefile on every invocation) on the archive
and on a folder of the same images (extracted there first when it does not exist; never inside the
repository): cold (no cache: every byte hashed), warm (cache, nothing changed: one stat per
file), and after touching every file (cache stale: all hashed again, same identity). Then times
`prepare` on the archive, and prints each cost as a fraction of it.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import zipfile
from pathlib import Path

from cifarlab.data.prepare import prepare
from cifarlab.data.sources import source_fingerprint


def timed(function, *args) -> tuple[float, object]:
    start = time.perf_counter()
    result = function(*args)
    return time.perf_counter() - start, result


def fingerprint_costs(source: Path, cache: Path) -> dict[str, float]:
    cache.unlink(missing_ok=True)
    cold, first = timed(source_fingerprint, str(source), cache)
    warm, second = timed(source_fingerprint, str(source), cache)
    files = [source] if source.is_file() else [p for p in source.rglob("*") if p.is_file()]
    for path in files:
        path.touch()
    touched, third = timed(source_fingerprint, str(source), cache)
    assert first == second == third, "the identity changed without a change of content"
    return {"cold": cold, "warm": warm, "touched": touched}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("archive", type=Path)
    parser.add_argument("--folder", type=Path, required=True, help="the images extracted (made if absent)")
    args = parser.parse_args()
    if not args.folder.exists():
        with zipfile.ZipFile(args.archive) as zf:
            zf.extractall(args.folder)
    images = sum(1 for p in args.folder.rglob("*") if p.is_file())
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        archive = tmp / args.archive.name  # a copy: touching must not change the shared file
        archive.write_bytes(args.archive.read_bytes())
        rows = {
            f"archive ({archive.stat().st_size / 2**20:.0f} MiB)": fingerprint_costs(archive, tmp / "a.json"),
            f"folder ({images} files)": fingerprint_costs(args.folder, tmp / "f.json"),
        }
        seconds, _ = timed(prepare, archive, tmp / "train.pt", tmp / "test.pt", None, 32, None, 1)
    print(f"prepare of the archive (1 worker): {seconds:.2f} s")
    print("| source | cold (no cache) | warm (unchanged) | every file touched |")
    print("| --- | ---: | ---: | ---: |")
    for name, costs in rows.items():
        cells = [f"{costs[k]:.2f} s ({costs[k] / seconds:.1%})" for k in ("cold", "warm", "touched")]
        print(f"| {name} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
