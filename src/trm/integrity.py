"""Checksums of what trm writes: a checkpoint directory and every data split carry `SHA256SUMS` (the format
`sha256sum -c` reads), so damage on disk is found and named when it is loaded rather than showing up as odd
numbers. A directory without one (an official data set, an older checkpoint) has nothing to check."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

from trm.errors import CheckpointError, TRMError

SUMS_NAME = "SHA256SUMS"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def write_checksums(directory: Path, files: Iterable[Path]) -> None:
    """`SHA256SUMS` in `directory` for `files` (which lie in it), replaced atomically."""
    tmp = directory / (SUMS_NAME + ".tmp")
    tmp.write_text("".join(f"{sha256_file(p)}  {p.name}\n" for p in sorted(files)))
    tmp.replace(directory / SUMS_NAME)


def verify_checksums(directory: Path, error: type[TRMError] = CheckpointError) -> None:
    """Check a directory's files against its `SHA256SUMS` (none: nothing to check); a mismatch is one
    `error` line naming the file."""
    sums = directory / SUMS_NAME
    if not sums.is_file():
        return
    for line in sums.read_text().splitlines():
        digest, _, name = line.partition("  ")
        path = directory / name
        if not path.is_file():
            raise error(f"{path}: missing (listed in {sums})")
        if sha256_file(path) != digest:
            raise error(
                f"{path}: corrupt (SHA-256 checksum mismatch with {sums}; "
                "if you changed it on purpose, delete that file)"
            )
