"""The pre-trained SAM base shipped in the package (`builtin:sam_mini_salient`, docs/base_model.md)."""

from __future__ import annotations

import pytest

from data_pipeline import synthetic
from vnsjax.build_sam import build_sam
from vnsjax.evaluation import runner
from vnsjax.model_dir import BUILTIN, DEFAULT_BASE, ModelDirError, load_model, read_meta, resolve


def test_builtin_names_resolve_into_the_package():
    assert DEFAULT_BASE == "builtin:sam_mini_salient" and "sam_mini_salient" in BUILTIN
    assert resolve(DEFAULT_BASE).is_dir()
    meta = read_meta(DEFAULT_BASE)
    assert (meta["variant"], meta["model_type"]) == ("sam", "mini")
    total = sum(f.stat().st_size for f in resolve(DEFAULT_BASE).rglob("*") if f.is_file())
    assert total <= 25 * 2**20
    with pytest.raises(ModelDirError, match="builtin:nope: no such built-in model; expected one of builtin:sam_mini"):
        load_model("builtin:nope")


@pytest.mark.slow
def test_shipped_base_segments_held_out_salient_scenes(tmp_path):
    """Box prompts on salient scenes the base never saw (another seed): it segments, a random base does not."""
    synthetic.generate(tmp_path, 2, seed=12345, subsets="Salient")
    models = {"base": load_model(DEFAULT_BASE), "random": build_sam("mini", "sam", seed=0)}
    summary, _ = runner.evaluate(models, tmp_path, "Salient", "box", batch_size=4, progress=False)
    iou = {name: summary["models"][name]["all"]["iou"] for name in models}
    assert summary["models"]["base"]["subsets"]["Salient"]["count"] >= 6  # a few objects per scene
    assert iou["base"] > 0.45 and iou["base"] > iou["random"] + 0.3, iou
