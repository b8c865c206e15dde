"""OutputFile: checked before the work, atomic, never over a user's file, and with the user's usual file mode."""

from __future__ import annotations

import os

import pytest

from vnsjax.utils.outputs import OutputError, OutputFile


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_written_file_has_the_mode_of_a_new_file(tmp_path, umask):
    old = os.umask(umask)
    try:
        out = OutputFile(tmp_path / "result.json", "a result", lambda _: False)
        out.write(b"{}")
    finally:
        os.umask(old)
    assert (tmp_path / "result.json").read_bytes() == b"{}"
    assert (tmp_path / "result.json").stat().st_mode & 0o777 == 0o666 & ~umask
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]  # no temporary left behind


def test_user_file_is_kept(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="exists and is not a result; it is kept"):
        OutputFile(tmp_path / "notes.txt", "a result", lambda _: False)
    assert (tmp_path / "notes.txt").read_text() == "mine"
