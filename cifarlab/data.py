"""Data stage: download (verified, atomic), safe extraction, decoding into uint8 tensors."""

from __future__ import annotations

from urllib.parse import urlparse


def archive_name(source: str) -> str:
    """File name under resources/<dataset>/ of the archive a source yields.

    URLs and archive paths keep their own name; a directory becomes `<name>.tar` (packed once, so
    that the rest of the DAG has one file to depend on); the synthetic source becomes
    `synthetic.zip`.
    """
    if source == "synthetic":
        return "synthetic.zip"
    path = urlparse(source).path if "://" in source else source
    base = path.rstrip("/").split("/")[-1]
    if not base:
        raise ValueError(f"cannot name an archive for data source {source!r}: give a file, folder or URL")
    if base.endswith((".zip", ".tar", ".tar.gz", ".tgz")):
        return base
    return f"{base}.tar"
