"""Loading a model directory: every missing, corrupt or damaged part is one ModelDirError naming the file."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from vnsjax.build_sam import VARIANTS, build_sam
from vnsjax.model_dir import ModelDirError, load_model, save_model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("models") / "tiny"
    save_model(build_sam("tiny", "sam"), path, source={"kind": "test"})
    return path


@pytest.fixture()
def copy(model_dir, tmp_path) -> Path:
    return Path(shutil.copytree(model_dir, tmp_path / "m"))


def _meta(path: Path) -> dict:
    return json.loads((path / "vnsjax.json").read_text())


def _load_error(path: Path) -> str:
    with pytest.raises(ModelDirError) as e:
        load_model(path)
    assert isinstance(e.value, ValueError)  # what predict / evaluate / export already catch
    return str(e.value)


@pytest.mark.slow
def test_intact_directory_loads(model_dir):
    assert load_model(model_dir).config.name == "tiny"


def test_missing_directory_and_missing_meta(tmp_path):
    assert f"{tmp_path / 'nope'}: no such model directory" in _load_error(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    msg = _load_error(tmp_path / "empty")
    assert f"{tmp_path / 'empty'} is not a converted vnsjax model: vnsjax.json is missing" in msg
    assert "python -m convert_weights" in msg


@pytest.mark.parametrize(
    "content, expected",
    [
        ('{"format": 1, "variant": "sam", ', "not a readable vnsjax.json (Expecting property name"),
        (b"\xff\xfe\x00garbage", "not a readable vnsjax.json"),
        ("[1, 2]", f"expected format 1 and a variant (one of {', '.join(VARIANTS)}), got [1, 2]"),
        ('{"format": 7, "variant": "sam"}', "got format 7 / variant 'sam'"),
    ],
)
def test_corrupt_meta_is_named(copy, content, expected):
    path = copy / "vnsjax.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    msg = _load_error(copy)
    assert msg.startswith(f"{path}: ") and expected in msg


def test_missing_config_or_geometry_key_is_named(copy):
    path = copy / "vnsjax.json"
    meta = _meta(copy)
    path.write_text(json.dumps({k: v for k, v in meta.items() if k != "config"}))
    assert _load_error(copy).startswith(f"{path}: no 'config' object (the model geometry: name, encoder_embed_dim")

    config = {k: v for k, v in meta["config"].items() if k != "encoder_depth"}
    path.write_text(json.dumps({**meta, "config": {**config, "depth": 8}}))
    msg = _load_error(copy)
    assert msg.startswith(f"{path}: 'config' lacks encoder_depth; has unknown depth (expected name, ")

    path.write_text(json.dumps({**meta, "config": {**meta["config"], "encoder_depth": "eight"}}))
    assert _load_error(copy).startswith(f"{path}: 'config' does not describe a buildable model (")


@pytest.mark.slow
def test_config_that_disagrees_with_the_weights(copy):
    meta = _meta(copy)
    (copy / "vnsjax.json").write_text(json.dumps({**meta, "config": {**meta["config"], "encoder_embed_dim": 64}}))
    assert _load_error(copy).startswith(f"{copy / 'state'}: the weights are missing or damaged")


def _damage_data(copy: Path) -> None:
    # Every data file of the OCDBT store, overwritten in place with bytes of the same length.
    files = [p for p in (copy / "state").rglob("*") if p.is_file() and p.parent.name == "d"]
    assert files
    for p in files:
        p.write_bytes(np.random.default_rng(0).integers(0, 256, p.stat().st_size, dtype=np.uint8).tobytes())


def _truncate_data(copy: Path) -> None:
    for p in (copy / "state").rglob("*"):
        if p.is_file() and p.parent.name == "d":
            p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: shutil.rmtree(d / "state"),
        lambda d: (d / "state" / "_METADATA").unlink(),
        _damage_data,
        _truncate_data,
    ],
    ids=["no_state", "no_metadata", "garbled_data", "truncated_data"],
)
def test_damaged_weights_are_one_error_naming_the_folder(copy, damage, capfd):
    damage(copy)
    msg = _load_error(copy)
    assert msg.startswith(f"{copy / 'state'}: the weights are missing or damaged (")
    assert msg.endswith("convert the checkpoint again") and "tensorstore_spec" not in msg
    assert "Event loop is closed" not in capfd.readouterr().err
