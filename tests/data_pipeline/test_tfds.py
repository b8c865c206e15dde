"""TFDS builder vns_seg: build from a synthetic manual_dir into a tmp data_dir, read back with tfds.data_source."""

import numpy as np
import tensorflow_datasets as tfds

from data_pipeline import pipeline, synthetic, tfds_builder, vns_seg


def test_build_and_read_back(tmp_path):
    manual, data_dir = tmp_path / "manual", tmp_path / "data"
    synthetic.generate(manual, num=2, seed=0, subsets=["CAMO", "COD-TR", "Polyp-TR"])

    assert tfds.builder_cls("vns_seg") is tfds_builder.VnsSeg
    names = {c.name for c in tfds_builder.VnsSeg.BUILDER_CONFIGS}
    assert names == {"train"} | {vns_seg.SUBSETS[n].tfds_config for n in vns_seg.EVAL_SUBSETS}
    assert "guogq/VNS-SAM" in tfds_builder.VnsSeg.MANUAL_DOWNLOAD_INSTRUCTIONS

    camo = tfds_builder.data_source("camo", str(data_dir), str(manual))
    assert len(camo) == 2
    assert list((data_dir / "vns_seg" / "camo" / "1.0.0").glob("*.array_record*"))
    by_name = {}
    for i in range(len(camo)):
        rec = camo[i]
        by_name[rec["name"].decode()] = rec
        assert rec["subset"] == b"CAMO"
    for ref in vns_seg.scan(manual, "CAMO").examples:
        expected = vns_seg.load_example(ref)
        rec = by_name[ref.name]
        np.testing.assert_array_equal(rec["image"], expected["image"])  # lossless PNG storage
        np.testing.assert_array_equal(rec["mask"][:, :, 0], expected["mask"])
        np.testing.assert_array_equal(rec["boundary"][:, :, 0], expected["boundary"])

    # Plain tfds.data_source reads the prepared dataset; the training config feeds the grain pipeline.
    again = tfds.data_source("vns_seg/camo", split="test", data_dir=str(data_dir), download=False)
    assert len(again) == 2
    train = tfds_builder.data_source("train", str(data_dir), str(manual))
    assert len(train) == 4 and {train[i]["subset"] for i in range(4)} == {b"COD-TR", b"Polyp-TR"}
    batch = next(pipeline.make_train_iterator(train, batch_size=2, seed=0))
    assert batch["image"].shape == (2, 1024, 1024, 3) and batch["mask_input"].shape == (2, 256, 256)
    ex = pipeline.make_eval_dataset(camo, "CAMO")[0]
    assert ex["subset"] == "CAMO" and ex["image1024"].shape == (1024, 1024, 3)
