"""Durable writes and checksums. A file is written beside its target, fsynced and renamed into place, so a
kill or a full disk never leaves a half-written one; a checkpoint directory and every data split carry
`SHA256SUMS` (the format `sha256sum -c` reads), so damage on disk is found and named when it is loaded. A
directory without one (an official data set, an older checkpoint) has nothing to check."""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from collections.abc import Iterable
from pathlib import Path

from trm.errors import CheckpointError, TRMError

SUMS_NAME = "SHA256SUMS"
TMP = ".tmp"  # the suffix of a write in progress


def fsync_dir(directory: Path) -> None:
    """Make the renames in `directory` durable (where directories can be opened and synced)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def cannot_save(path: Path, what: str, err: BaseException) -> CheckpointError:
    reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
    kept = f"the previous {what} is intact" if path.exists() else f"no {what} was written"
    return CheckpointError(f"{path}: cannot save the {what} ({reason}); {kept}")


def write_atomic(path: Path, data: bytes | memoryview, what: str = "file", pause: float = 0.0) -> None:
    """Replace `path` by `data` durably, or raise one CheckpointError line (a full disk) leaving it as it was.
    `pause` seconds are slept half-way through the temporary file (the test hook)."""
    tmp = path.with_name(path.name + TMP)
    view = memoryview(data)
    half = len(view) // 2 if pause else len(view)
    try:
        with open(tmp, "wb") as f:
            f.write(view[:half])
            f.flush()
            time.sleep(pause)
            f.write(view[half:])
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise cannot_save(path, what, err) from err
    fsync_dir(path.parent)


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
