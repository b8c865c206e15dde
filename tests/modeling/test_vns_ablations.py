"""VNS-SAM ablation decoders (VnsAblation): trainable parameters per module against the official code's counts,
the outputs each variant has, and training from configs/vns_ablation.py."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from flax import nnx

from vnsjax.build_sam import DECODERS, build_mask_decoder, build_sam, get_model_config
from vnsjax.modeling.sam import eval_view
from vnsjax.modeling.vns_decoder import ABLATIONS, VnsAblation, VnsDecoder
from vnsjax.predictors.prompts import pack_prompts

# The released decoder's trainable modules at ViT-B ("transformer" = its internal stage only).
RELEASED_B = {
    "transformer": 132_224,
    "hf_token": 512,
    "hf_mlp": 139_808,
    "edge_mlp": 139_808,
    "neck": 765_640,
    "embedding_maskfeature": 37_088,
    "embedding_edgefeature": 73_952,
    "dense_pred_head": 590_337,
    "fusion_layer": 597_249,
}
MPL = ("dense_pred_head", "fusion_layer")


def _without(*names: str, **changed: int) -> dict[str, int]:
    return {**{k: v for k, v in RELEASED_B.items() if k not in names}, **changed}


# Official ablation decoders: (trainable per module at ViT-B, total at ViT-B, trainable MiB at ViT-L as the
# reference lists it, 2 decimals). Counts from the official code (docs/training.md#vns-ablations).
EXPECTED = {
    "vnst": (
        _without("transformer", "neck", *MPL, embedding_edgefeature=37_088),
        354_304,
        1.35,
    ),
    "no_nsfm": (_without("neck", "embedding_maskfeature", "embedding_edgefeature"), 1_599_938, 6.10),
    "vnst_nsfm": (_without("transformer", "embedding_maskfeature", *MPL), 1_119_720, 4.65),
    "mt": (
        _without("edge_mlp", "neck", "embedding_maskfeature", "embedding_edgefeature", hf_token=256),
        1_459_874,
        5.57,
    ),
    "epl_epl": (_without(*MPL), 1_289_032, 5.29),
    "mpl_mpl": (_without(supple_feat_head_edge=590_337, fusion_layer2=597_249), 3_664_204, 14.35),
    "no_tf": (_without(hf_mlp=74_016), 2_410_826, 9.57),
    "gate": (_without(gate_fusion=3_136), 2_479_754, 9.84),
    "no_wd": (_without(neck=562_612), 2_273_590, 9.05),
    "hf_only": (_without(neck=624_468), 2_335_446, 9.28),
    "lf_only": (_without(neck=624_468), 2_335_446, 9.28),
}


def _trainable_per_module(variant: str, model_type: str) -> dict[str, int]:
    cls = DECODERS[variant]
    decoder = nnx.eval_shape(lambda: build_mask_decoder(get_model_config(model_type), variant, nnx.Rngs(0)))
    counts: dict[str, int] = {}
    for path, leaf in nnx.to_flat_state(nnx.state(decoder, cls.TRAINABLE)):
        counts[str(path[0])] = counts.get(str(path[0]), 0) + int(np.prod(leaf.shape))
    return counts


def test_every_official_ablation_is_registered():
    assert set(EXPECTED) == set(ABLATIONS)
    assert all(DECODERS[f"vns_{name}"].ABLATION == ABLATIONS[name] for name in ABLATIONS)
    assert DECODERS["vns"].ABLATION == VnsAblation()


@pytest.mark.parametrize("name", sorted(EXPECTED))
@pytest.mark.slow
def test_trainable_parameters_equal_the_official_code(name):
    per_module, total_b, mib_l = EXPECTED[name]
    counts_b = _trainable_per_module(f"vns_{name}", "vit_b")
    assert counts_b == per_module
    assert sum(counts_b.values()) == total_b
    total_l = sum(_trainable_per_module(f"vns_{name}", "vit_l").values())
    # Only the NSFM's four 1x1 reductions see the backbone width (96 x (1024 - 768) x 4 more at ViT-L).
    assert total_l - total_b == (98_304 if "neck" in per_module else 0)
    # The reference lists ViT-L in MiB rounded to 2 decimals (gate's 9.8345 is listed as 9.84).
    assert abs(total_l * 4 / 2**20 - mib_l) <= 0.01


def test_released_count_is_unchanged():
    counts = _trainable_per_module("vns", "vit_b")
    assert counts == RELEASED_B


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_ablation_forward_has_the_variants_outputs(name):
    variant = f"vns_{name}"
    ablation = ABLATIONS[name]
    graphdef, state = nnx.split(eval_view(build_sam("tiny", variant, seed=1)))

    @jax.jit
    def run(state, images, prompts):
        model = nnx.merge(graphdef, state)
        features = model.image_features(images)
        return features, model.decode(features, prompts, multimask_output=False)

    images = np.random.default_rng(0).uniform(0, 255, (1, 256, 256, 3)).astype(np.float32)
    boxes = np.array([[10.0, 20.0, 200.0, 180.0], [40.0, 30.0, 120.0, 220.0]])
    prompts, _ = pack_prompts(boxes=boxes, mask_size=(64, 64))
    features, out = run(state, images, prompts)
    present = {k for k, v in out.extras.items() if v is not None}
    expected = {"sam_masks", "vns_mask"}
    if ablation.tokens == "both":
        expected |= {"edge"} | ({"interm_edge"} if ablation.multi_stage else set())
    if ablation.multi_stage:
        expected |= {"interm_mask"}
    if ablation.mask_fusion:
        expected |= {"fused_mask", "dense_map"}
    assert present == expected
    assert sorted(features.decoder) == ([] if ablation.nsfm == "none" else ["nsfm_g", "nsfm_m"])
    for key in present - {"dense_map"}:
        assert out.extras[key].shape == (2, 1, 64, 64), key
        assert np.isfinite(np.asarray(out.extras[key])).all(), key
    # The prediction is the fused mask where the variant has the MPL fusion, else the final VNS mask.
    prediction = out.extras["fused_mask" if ablation.mask_fusion else "vns_mask"]
    np.testing.assert_array_equal(np.asarray(out.masks), np.asarray(prediction))
    # Two different boxes give two different predictions (the prompt reaches the output).
    assert not np.allclose(np.asarray(out.masks[0]), np.asarray(out.masks[1]))


@pytest.mark.slow
def test_nsfm_modes_keep_one_subband_fusion():
    necks = {
        name: nnx.eval_shape(lambda name=name: build_mask_decoder(get_model_config("tiny"), name, nnx.Rngs(0))).neck
        for name in ("vns", "vns_no_wd", "vns_hf_only", "vns_lf_only")
    }
    has = {name: (hasattr(n.aggregator, "MFF_LL"), hasattr(n.aggregator, "MFF_HH")) for name, n in necks.items()}
    assert has == {
        "vns": (True, True),
        "vns_no_wd": (True, False),
        "vns_hf_only": (False, True),
        "vns_lf_only": (True, False),
    }


def test_inconsistent_switches_are_refused():
    with pytest.raises(ValueError, match="nsfm"):
        VnsAblation(nsfm="dwt")
    with pytest.raises(ValueError, match="tokens='mask'"):
        VnsAblation(tokens="mask", edge_embedding="none")  # token_fusion left at "add"
    with pytest.raises(ValueError, match="edge_fusion"):
        VnsAblation(edge_fusion=True, mask_fusion=False)
    assert isinstance(VnsDecoder.ABLATION, VnsAblation)


def test_vns_predictor_on_an_ablation_without_edge_or_fusion():
    from vnsjax.predictors.vns_predictor import VnsPredictor

    model = build_sam("tiny", "vns_mt", seed=0)
    with pytest.raises(ValueError, match="no edge head"):
        VnsPredictor(model, output="edge")
    predictor = VnsPredictor(build_sam("tiny", "vns_vnst", seed=0))
    image = np.random.default_rng(1).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    predictor.set_image(image)
    masks, scores, _ = predictor.predict(box=np.array([10.0, 10.0, 90.0, 70.0]))
    assert masks.shape[-2:] == (96, 128) and np.isfinite(scores).all()
