"""Progress for long loops: a tqdm bar on a terminal; elsewhere (a log file, CI, a pipe) a plain line every
`every` seconds and one at the end, since a redirected bar is one endless line of carriage returns."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import IO, Any

from tqdm import tqdm


class LogProgress:
    """The part of tqdm's interface trm's loops use (update, set_postfix, close, n, total, iteration, `with`),
    printed as `desc: n/total unit (p%) postfix` lines."""

    def __init__(
        self,
        iterable: Iterable | None = None,
        total: float | None = None,
        desc: str = "",
        unit: str = "it",
        initial: float = 0,
        file: IO[str] | None = None,
        every: float = 30.0,
    ):
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.total, self.desc, self.unit, self.n = total, desc, unit, initial
        self.file, self.every = file or sys.stderr, every
        self.postfix = ""
        self._last = time.monotonic()
        self._shown: tuple[float, str] | None = None  # what the last line said
        self._closed = False

    def __iter__(self) -> Iterator:
        for item in self.iterable or ():
            yield item
            self.update(1)
        self.close()

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, n: float = 1) -> None:
        self.n += n
        if time.monotonic() - self._last >= self.every:
            self._print()

    def set_postfix(self, **values: Any) -> None:
        self.postfix = " ".join(f"{k}={v}" for k, v in values.items())

    def close(self) -> None:
        """The final line, unless the last periodic one already said it."""
        if not self._closed:
            self._closed = True
            if self._shown != (self.n, self.postfix):
                self._print()

    def _print(self) -> None:
        self._last, self._shown = time.monotonic(), (self.n, self.postfix)
        count = f"{self.n:g}/{self.total:g}" if self.total else f"{self.n:g}"
        percent = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        tail = f" {self.postfix}" if self.postfix else ""
        print(f"{self.desc}: {count} {self.unit}{percent}{tail}", file=self.file, flush=True)


def progress(
    iterable: Iterable | None = None,
    *,
    total: float | None = None,
    desc: str = "",
    unit: str = "it",
    disable: bool = False,
    leave: bool = True,
    initial: float = 0,
    file: IO[str] | None = None,
    every: float = 30.0,
) -> tqdm | LogProgress:
    """A tqdm bar when `file` (default stderr) is a terminal, else a `LogProgress`; `disable` silences both."""
    file = file or sys.stderr
    if disable or file.isatty():
        return tqdm(
            iterable, total=total, desc=desc, unit=unit, disable=disable, leave=leave, initial=initial, file=file
        )
    return LogProgress(iterable, total=total, desc=desc, unit=unit, initial=initial, file=file, every=every)
