"""notebooks/colab_tpu.ipynb runs top to bottom (small size) under nbclient."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "colab_tpu.ipynb"


@pytest.mark.slow
def test_notebook_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("VNSJAX_NOTEBOOK_SIZE", "small")
    monkeypatch.setenv("VNSJAX_NOTEBOOK_WORKDIR", str(tmp_path / "work"))
    monkeypatch.setenv("JAX_PLATFORMS", os.environ.get("JAX_PLATFORMS", "cpu"))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    work = tmp_path / "work"
    assert (work / "ckpt" / "sam" / "vnsjax.json").is_file()
    assert (work / "pred" / "scene.png_overlay.png").is_file()
    assert (work / "train" / "metrics.jsonl").read_text().strip()
    table = (work / "eval" / "results.md").read_text()
    assert "| sam |" in table and "| model |" in table  # base SAM and the fine-tuned VNS-SAM, side by side
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert any(o.get("output_type") == "display_data" and "image/png" in o.get("data", {}) for o in outputs)
