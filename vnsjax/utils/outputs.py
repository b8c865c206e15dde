"""Output files of the commands: checked before the work that produces them, never written over a user's file."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path


class OutputError(Exception):
    """An output cannot be used or written; the message is one line naming the path."""


class OutputFile:
    """One file written at the end of a run, checked at the start.

    An existing `path` is replaced only if `replaceable(path)` says it is an earlier output of the same command.
    A temporary file is created (and removed) beside `path` now, so that an unwritable place is reported before
    any work; `write` goes through a temporary file renamed over `path`, so a failed write leaves no half file.
    """

    def __init__(self, path: str | os.PathLike, kind: str, replaceable: Callable[[Path], bool]):
        self.path = Path(path)
        if self.path.is_dir() or (self.path.exists() and not replaceable(self.path)):
            raise OutputError(f"--out {self.path} exists and is not {kind}; it is kept, choose another name")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OutputError(f"cannot write {self.path}: {e.strerror or e}") from e
        self._temporary().unlink()

    def _temporary(self) -> Path:
        try:
            fd, name = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        except OSError as e:
            raise OutputError(f"cannot write {self.path}: {e.strerror or e}") from e
        os.close(fd)
        return Path(name)

    def write(self, data: bytes) -> None:
        tmp = self._temporary()
        try:
            tmp.write_bytes(data)
            # mkstemp makes the file private (0600); the output gets the mode any new file of the user's gets.
            os.chmod(tmp, 0o666 & ~_umask())
            os.replace(tmp, self.path)
        except OSError as e:
            raise OutputError(f"cannot write {self.path}: {e.strerror or e}") from e
        finally:
            tmp.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)  # the only portable way to read it is to set it
    os.umask(mask)
    return mask


def check_out_dir(path: str | os.PathLike, names: Sequence[str]) -> Path:
    """Refuses an --out that is a file, cannot be written, or holds files other than this run's outputs.

    An earlier run's outputs (same names) may be replaced; anything else the user put there is never touched.
    """
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out} exists and is not a directory")
    if out.is_dir():
        foreign = sorted(p.name for p in out.iterdir() if p.name not in set(names))
        if foreign:
            raise OutputError(
                f"--out {out} already holds files this run does not write ({', '.join(foreign[:5])}"
                f"{', ...' if len(foreign) > 5 else ''}); choose an empty or new directory"
            )
        probe = out
    else:
        probe = next((p for p in out.absolute().parents if p.exists()), Path("/"))
        if not probe.is_dir():
            raise OutputError(f"--out {out}: {probe} is not a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise OutputError(f"--out {out}: {probe} is not writable")
    return out
