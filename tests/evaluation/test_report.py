"""vnsjax.report: released aggregation (per image, equal weight per subset), table, JSON and CSV."""

import csv
import json
import math
import statistics

import pytest

from vnsjax.evaluation import report as R


def rec(model, subset, file, iou, biou=0.5, em=0.5, wfm=0.5, **extra):
    return {"model": model, "subset": subset, "file": file, "iou": iou, "biou": biou, "em": em, "wfm": wfm, **extra}


@pytest.fixture
def records():
    return [
        rec("VNS-SAM", "CAMO", "a.jpg", 0.9),
        rec("VNS-SAM", "CAMO", "b.jpg", 0.7),
        rec("VNS-SAM", "CAMO", "c.jpg", 0.8, biou=float("nan")),
        rec("VNS-SAM", "CVC-ClinicDB", "d.png", 0.4),  # released folder name -> ClinicDB
        rec("VNS-SAM", "NC4K", "e.jpg", 0.6),
        rec("VNS-SAM", "NC4K", "f.jpg", 0.0, error="unreadable image"),
        rec("SAM", "camo", "a.jpg", 0.5),
        rec("SAM", "NC4K", "e.jpg", 0.3),
    ]


def test_canonical_subset_names():
    assert R.canonical_subset("CVC-ClinicDB") == "ClinicDB"
    assert R.canonical_subset("DIS5K-VD-low") == "DIS-Dark"
    assert R.canonical_subset("ThinObject5k-TE-low") == "Thin-Dark"
    assert R.canonical_subset("cds2k") == "CDS2K"
    assert R.canonical_subset("cod10k") == "COD10K"
    assert R.canonical_subset("MyOwnSet") == "MyOwnSet"


def test_summarize_equal_subset_weight_and_failures(records):
    s = R.summarize(records)
    vns = s["models"]["VNS-SAM"]
    assert s["subsets"] == ["CAMO", "ClinicDB", "NC4K"]
    assert vns["subsets"]["CAMO"]["iou"] == pytest.approx(0.8)
    nc4k = {"count": 1, "failed": 1, "iou": 0.6, "biou": 0.5, "em": 0.5, "wfm": 0.5, "nan": {}}
    assert vns["subsets"]["NC4K"] == nc4k
    # Seen: CAMO and ClinicDB weigh the same although CAMO has three images.
    assert vns["seen"]["iou"] == pytest.approx((0.8 + 0.4) / 2)
    assert vns["seen"]["subsets"] == ["CAMO", "ClinicDB"]
    assert vns["unseen"]["iou"] == pytest.approx(0.6)
    assert vns["all"]["iou"] == pytest.approx((0.8 + 0.4 + 0.6) / 3)
    # Released behaviour: one NaN boundary IoU makes the subset (and the seen) mean NaN; it is counted.
    assert math.isnan(vns["subsets"]["CAMO"]["biou"]) and math.isnan(vns["seen"]["biou"])
    assert vns["subsets"]["CAMO"]["nan"] == {"biou": 1}
    assert "ClinicDB" not in s["models"]["SAM"]["subsets"]


def test_summarize_nan_omit(records):
    vns = R.summarize(records, nan_policy="omit")["models"]["VNS-SAM"]
    assert vns["subsets"]["CAMO"]["biou"] == pytest.approx(0.5)
    assert vns["subsets"]["CAMO"]["nan"] == {"biou": 1}


def test_format_markdown(records):
    text = R.format_markdown(R.summarize(records))
    lines = text.splitlines()
    header = lines[0].split(" | ")
    assert header[:5] == ["| Model", "CAMO IoU", "BIoU", "Em", "wFm"]
    assert lines[0].endswith("Unseen IoU | BIoU | Em | wFm |")
    assert len(header) == 1 + 4 * (3 + 2)
    vns_row = lines[2].split(" | ")
    assert vns_row[0] == "| VNS-SAM" and vns_row[1] == "0.800" and vns_row[2] == "–"  # NaN shown as a dash
    assert "| SAM |" in text and "0.500" in lines[3]
    assert "failed images (excluded) NC4K 1" in text
    assert "NaN values (propagate) CAMO BIoU 1" in text


def test_write_reports(tmp_path, records):
    summary = R.summarize(records)
    paths = R.write_reports(summary, records, tmp_path / "out")
    assert {p.name for p in paths.values()} == {"results.md", "results.json", "results_per_image.csv"}
    data = json.loads(paths["json"].read_text())  # strict JSON: NaN written as null
    assert data["models"]["VNS-SAM"]["subsets"]["CAMO"]["biou"] is None
    assert data["models"]["VNS-SAM"]["seen"]["iou"] == pytest.approx(0.6)
    rows = list(csv.DictReader(paths["csv"].read_text().splitlines()))
    assert len(rows) == len(records)
    assert list(rows[0])[:7] == ["model", "subset", "file", "iou", "biou", "em", "wfm"]
    assert list(rows[0])[-1] == "error"
    assert rows[3]["subset"] == "ClinicDB" and rows[5]["error"] == "unreadable image"
    assert paths["markdown"].read_text() == R.format_markdown(summary)


def test_subset_groups_match_data_pipeline():
    from data_pipeline import vns_seg

    assert R.SEEN == vns_seg.SEEN and R.UNSEEN == vns_seg.UNSEEN
    for name, spec in vns_seg.SUBSETS.items():
        if spec.split != "train":
            assert R.canonical_subset(spec.released_name) == name


def test_run_stats_mean_and_sample_spread_over_runs():
    values = [0.71, 0.74, 0.80]
    stats = R.run_stats(values)
    assert stats["mean"] == pytest.approx(statistics.fmean(values))
    assert stats["std"] == pytest.approx(statistics.stdev(values))
    assert R.format_cell(stats) == f"{statistics.fmean(values):.3f} ± {statistics.stdev(values):.3f}"
    single = R.run_stats([0.5])
    assert single["std"] is None and R.format_cell(single) == "0.500"
