"""Checksums of what trm writes: a checkpoint directory carries `SHA256SUMS` (the format `sha256sum -c`
reads), so damage on disk is found and named when it is loaded rather than showing up as odd numbers."""

from __future__ import annotations

import hashlib
from pathlib import Path

from trm.errors import CheckpointError

SUMS_NAME = "SHA256SUMS"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def verify_checksums(directory: Path) -> None:
    """Check a directory's files against its `SHA256SUMS` (none: nothing to check); a mismatch is one
    CheckpointError line naming the file."""
    sums = directory / SUMS_NAME
    if not sums.is_file():
        return
    for line in sums.read_text().splitlines():
        digest, _, name = line.partition("  ")
        path = directory / name
        if not path.is_file():
            raise CheckpointError(f"{path}: missing (listed in {sums})")
        if sha256_file(path) != digest:
            raise CheckpointError(f"{path}: corrupt (SHA-256 checksum mismatch with {sums})")
