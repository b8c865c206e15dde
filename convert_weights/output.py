"""Writing a converted model without touching anything the user owns.

The converter owns two names in its output folder: `vnsjax.json` and `state/`. A folder that already holds a
`vnsjax.json` is its own previous output and only those two entries are replaced. Any other non-empty folder is
refused unless `overwrite`, and even then a foreign `state/` is never replaced. The model is first written to a
temporary folder next to the output (same file system, so moving it in is a rename): a failed conversion leaves
the output as it was.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from vnsjax.model_dir import META, STATE, save_model
from vnsjax.modeling.sam import Sam

OWN = (STATE, META)


class OutputError(ValueError):
    """The output folder cannot be used, or writing to it failed; the message names the path."""


def check_output(output: str | Path, *, overwrite: bool = False) -> None:
    """Raises OutputError if writing a model to `output` could replace something the converter does not own.

    Called before any work, so that a refusal costs nothing.
    """
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise OutputError(f"--output {output} exists and is not a folder")
    above = next(p for p in output.absolute().parents if p.exists())
    if not above.is_dir():
        raise OutputError(f"--output {output}: {above} is a file, not a folder")
    if not output.is_dir() or (output / META).is_file() or not any(output.iterdir()):
        return
    if not overwrite:
        raise OutputError(
            f"--output {output} is not empty and holds no converted model ({META}); nothing was written. "
            f"Choose a new or empty folder, or pass --overwrite to add {META} and {STATE}/ next to its contents"
        )
    if (output / STATE).exists():
        raise OutputError(
            f"--output {output}: {output / STATE} exists and was not written by the converter; it is not replaced "
            "(even with --overwrite). Choose another folder"
        )


def write_model_dir(model: Sam, output: str | Path, *, source: dict[str, Any], overwrite: bool = False) -> Path:
    """Writes `model` to `output` by the rules above; every failure is one OutputError naming the path."""
    output = Path(output).absolute()
    check_output(output, overwrite=overwrite)
    created = _missing_ancestors(output.parent)
    tmp = None
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}.converting-", dir=output.parent))
        tmp.chmod(0o777 & ~_umask())  # mkdtemp's 0700 would otherwise become the output folder's mode
        save_model(model, tmp, source=source)
        _move_in(tmp, output)
    except BaseException as e:  # Ctrl-C included: nothing half-written stays behind
        if tmp is not None:
            _remove(tmp)
        for d in created:
            with contextlib.suppress(OSError):
                d.rmdir()
        if isinstance(e, OutputError) or not isinstance(e, OSError | ValueError | RuntimeError):
            raise
        raise OutputError(f"cannot write {output}: {_reason(e)}; nothing was written") from e
    return output


def _move_in(tmp: Path, output: Path) -> None:
    if not output.exists():
        tmp.rename(output)
        return
    if not any(output.iterdir()):
        output.rmdir()
        tmp.rename(output)
        return
    # Replace only our own entries; the previous state is kept until the new one is in place.
    old_state = tmp / ("previous-" + STATE)
    if (output / STATE).exists():
        (output / STATE).rename(old_state)
    try:
        (tmp / STATE).rename(output / STATE)
    except OSError:
        if old_state.exists():
            old_state.rename(output / STATE)
        raise
    os.replace(tmp / META, output / META)
    shutil.rmtree(tmp, ignore_errors=True)


def _remove(tree: Path) -> None:
    """rmtree that outlasts stragglers: after a failed save, tensorstore writes still in flight can recreate
    folders in `tree` for a moment (their errors are what `quiet_orbax_failures` hides)."""
    for _ in range(50):
        shutil.rmtree(tree, ignore_errors=True)
        time.sleep(0.1)
        if not tree.exists():
            return
    atexit.register(shutil.rmtree, tree, ignore_errors=True)


def _reason(e: BaseException) -> str:
    """The OS error behind an exception, in a few words (tensorstore reports it as `[os_error_code='28']`)."""
    if isinstance(e, OSError) and e.errno is not None:
        return f"{os.strerror(e.errno)} (errno {errno.errorcode.get(e.errno, e.errno)})"
    code = re.search(r"os_error_code='?(\d+)", str(e))
    if code:
        n = int(code.group(1))
        return f"{os.strerror(n)} (errno {errno.errorcode.get(n, n)})"
    return f"{type(e).__name__}: {str(e).split(' [tensorstore_spec=')[0][:300]}"


def _missing_ancestors(path: Path) -> list[Path]:
    """Folders that mkdir(parents=True) would create, deepest first (removed again if the conversion fails)."""
    out = []
    while not path.exists() and path != path.parent:
        out.append(path)
        path = path.parent
    return out


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
