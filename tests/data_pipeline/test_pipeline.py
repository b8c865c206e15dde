"""grain pipelines: static batch spec, determinism, checkpointable state, process sharding, workers, evaluation."""

import grain
import numpy as np
import pytest
from etils import epath

from data_pipeline import edges, pipeline, prompts, synthetic, transforms, vns_seg

N = 8


def _record(i):
    """Constant image of value 4 i + 2 (identifies the record after any resize/crop) with a box object."""
    h, w = 60 + 10 * i, 90
    mask = np.zeros((h, w), np.uint8)
    mask[10:50, 20 + i : 60 + i] = 255
    return {"image": np.full((h, w, 3), 4 * i + 2, np.uint8), "mask": mask, "boundary": edges.boundary_from_mask(mask)}


SOURCE = [_record(i) for i in range(N)]


def _ids(batch):
    return [int(round((v - 2) / 4)) for v in batch["image"][:, 0, 0, 0]]


def _equal(a, b):
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_batches_have_the_static_spec():
    it = pipeline.make_train_iterator(SOURCE, batch_size=2, seed=0)
    for _ in range(3):
        batch = next(it)
        assert set(batch) == set(pipeline.TRAIN_BATCH_SPEC)
        for key, (shape, dtype) in pipeline.TRAIN_BATCH_SPEC.items():
            assert batch[key].shape == (2,) + shape and batch[key].dtype == dtype, key
        assert 0 <= batch["mask"].min() and batch["mask"].max() <= 1 and 0 <= batch["edge"].min() <= 1
        assert set(np.unique(batch["mask_input"])) <= {0.0, 255.0}
        for i in range(2):
            fg = batch["mask"][i] > np.float32(128 / 255)
            assert fg.any()  # the object survives the crop in this data
            np.testing.assert_array_equal(batch["box"][i], prompts.box_from_mask(batch["mask"][i] * 255))
            pts = batch["points"][i].astype(int)
            assert (batch["point_labels"][i] == 1).all() and fg[pts[:, 1], pts[:, 0]].all()


def test_deterministic_for_a_seed():
    a = pipeline.make_train_iterator(SOURCE, batch_size=2, seed=3)
    b = pipeline.make_train_iterator(SOURCE, batch_size=2, seed=3, num_threads=0)
    c = pipeline.make_train_iterator(SOURCE, batch_size=2, seed=4)
    first = [next(a) for _ in range(2)]
    assert all(_equal(x, next(b)) for x in first)
    assert not _equal(first[0], next(c))


def test_epochs_are_permutations_and_reshuffled():
    it = pipeline.make_train_iterator(SOURCE, batch_size=1, seed=0, num_epochs=2)
    ids = [_ids(b)[0] for b in it]
    assert sorted(ids[:N]) == sorted(ids[N:]) == list(range(N)) and ids[:N] != ids[N:]


def test_iterator_state_round_trip(tmp_path):
    it = pipeline.make_train_iterator(SOURCE, batch_size=2, seed=0)
    next(it)
    state = it.get_state()
    expected = [next(it) for _ in range(2)]
    fresh = pipeline.make_train_iterator(SOURCE, batch_size=2, seed=0)
    fresh.set_state(state)
    assert all(_equal(e, next(fresh)) for e in expected)
    # Through grain's orbax checkpoint handler (what a training checkpoint stores).
    directory = epath.Path(tmp_path)
    grain.checkpoint.CheckpointHandler().save(directory, item=fresh)
    following = next(fresh)
    restored = grain.checkpoint.CheckpointHandler().restore(
        directory, item=pipeline.make_train_iterator(SOURCE, batch_size=2, seed=0)
    )
    assert _equal(following, next(restored))


def test_process_shards_are_disjoint_and_cover_an_epoch():
    shards = []
    for index in range(2):
        it = pipeline.make_train_iterator(SOURCE, batch_size=1, seed=0, shard_index=index, shard_count=2, num_epochs=1)
        shards.append([_ids(b)[0] for b in it])
    assert len(shards[0]) == len(shards[1]) == N // 2
    assert not set(shards[0]) & set(shards[1]) and sorted(shards[0] + shards[1]) == list(range(N))
    assert pipeline.steps_per_epoch(N, batch_size=2, shard_count=2) == 2
    with pytest.raises(ValueError):
        pipeline.make_train_dataset(SOURCE, batch_size=1, seed=0, shard_index=2, shard_count=2)


@pytest.mark.slow
def test_worker_processes_give_the_same_stream():
    reference = pipeline.make_train_iterator(SOURCE, batch_size=2, seed=1)
    expected = [next(reference) for _ in range(2)]
    it = pipeline.make_train_iterator(SOURCE, batch_size=2, seed=1, num_workers=2)
    assert all(_equal(e, next(it)) for e in expected)


def test_train_iterator_from_a_directory(tmp_path):
    synthetic.generate(tmp_path, num=2, seed=0, subsets="train")
    batch = next(pipeline.make_train_iterator(tmp_path, batch_size=2, seed=0))
    assert batch["image"].shape == (2, 1024, 1024, 3) and batch["edge"].max() > 0


def test_eval_dataset(tmp_path):
    synthetic.generate(tmp_path, num=3, seed=0, subsets=["Kvasir"])
    ds = pipeline.make_eval_dataset(tmp_path, "Kvasir", seed=42)
    assert len(ds) == 3
    ex = ds[1]
    assert ex["name"] == "kvasir_00001" and ex["subset"] == "Kvasir"
    assert ex["image1024"].shape == (1024, 1024, 3) and ex["image1024"].dtype == np.uint8
    assert tuple(ex["size"]) == ex["mask"].shape and ex["mask"].dtype == np.uint8 and ex["mask"].shape != (1024, 1024)
    raw = vns_seg.load_example(vns_seg.scan(tmp_path, "Kvasir").examples[1], with_boundary=False)
    np.testing.assert_array_equal(ex["mask"], raw["mask"])
    image1024, mask1024 = transforms.eval_resize(raw["image"], raw["mask"])
    np.testing.assert_array_equal(ex["image1024"], image1024)
    np.testing.assert_array_equal(ex["box"], prompts.box_from_mask(mask1024))
    pts = ex["points"].astype(int)
    assert ex["points"].shape == (10, 2) and (ex["point_labels"] == 1).all()
    assert (mask1024[pts[:, 1], pts[:, 0]] > 128).all()
    assert not np.array_equal(ex["noise_box"], ex["box"]) and ex["noise_box"].max() <= 1024
    again = pipeline.make_eval_dataset(tmp_path, "Kvasir", seed=42)[1]
    assert all(np.array_equal(ex[k], again[k]) for k in ("points", "noise_box"))
    other = pipeline.make_eval_dataset(tmp_path, "Kvasir", seed=7)[1]
    assert not np.array_equal(ex["points"], other["points"])
