"""Evaluation reports: dataset-level aggregation as released, markdown table, JSON summary, per-image CSV.

Input: per-image records, mappings with at least "model", "subset", "file" and the metric values
("iou", "biou", "em", "wfm", optionally "dice" or anything numeric); a record with a non-empty "error"
is a failed image: counted per subset, shown in the table footnote, excluded from every mean.

    summary = summarize(records)
    print(format_markdown(summary))
    paths = write_reports(summary, records, "results/")

Aggregation follows MyTrain.py `evaluate`: per-image values are averaged over the images of a subset,
subsets get equal weight, "seen" / "unseen" are means of subset means. The released code divides by
the fixed 6 / 4 list lengths; here the mean is over the subsets present, which is the same on a full run.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

SEEN = ("CAMO", "COD10K", "Kvasir", "ClinicDB", "DIS-Dark", "Thin-Dark")
UNSEEN = ("NC4K", "ColonDB", "ETIS", "LIS", "CDS2K")
TABLE_METRICS = ("iou", "biou", "em", "wfm")
METRIC_LABELS = {"iou": "IoU", "biou": "BIoU", "em": "Em", "wfm": "wFm", "dice": "Dice"}

# Folder / dataset names used by the released code and the VNS-SEG release, mapped to the paper's names.
_ALIASES = {
    "cvcclinicdb": "ClinicDB",
    "dis5kvdlow": "DIS-Dark",
    "disvdlow": "DIS-Dark",
    "thinobject5ktelow": "Thin-Dark",
    "thinobjectdark": "Thin-Dark",
    "cvccolondb": "ColonDB",
    "etislaribpolypdb": "ETIS",
}
_CANONICAL = {re.sub(r"[^a-z0-9]", "", n.lower()): n for n in SEEN + UNSEEN} | _ALIASES


def canonical_subset(name: str) -> str:
    """Paper name of a subset (case and punctuation insensitive, released folder names accepted); else `name`."""
    return _CANONICAL.get(re.sub(r"[^a-z0-9]", "", name.lower()), name)


def _mean(values: Sequence[float], nan_policy: str) -> float:
    if nan_policy == "omit":
        values = [v for v in values if not math.isnan(v)]
    return math.fsum(values) / len(values) if values else float("nan")


def _is_failed(record: Mapping[str, Any]) -> bool:
    return bool(record.get("error"))


def _metric_names(records: Iterable[Mapping[str, Any]]) -> list[str]:
    reserved = {"model", "subset", "file", "error"}
    names: dict[str, None] = {}
    for r in records:
        for k, v in r.items():
            if k not in reserved and isinstance(v, int | float) and not isinstance(v, bool):
                names[k] = None
    # Table metrics first, in table order, then the rest as they appear.
    return [m for m in TABLE_METRICS if m in names] + [m for m in names if m not in TABLE_METRICS]


def summarize(
    records: Iterable[Mapping[str, Any]], *, nan_policy: Literal["propagate", "omit"] = "propagate"
) -> dict[str, Any]:
    """Per-model, per-subset means plus seen / unseen / all means.

    nan_policy="propagate" is the released behaviour (a NaN boundary IoU, from an image whose GT and
    prediction bands are both empty, makes its subset mean NaN); "omit" drops NaNs per metric.
    NaN counts are reported in either case.
    """
    records = list(records)
    metrics = _metric_names(records)
    grouped: dict[str, dict[str, list[Mapping[str, Any]]]] = {}
    for r in records:
        grouped.setdefault(str(r["model"]), {}).setdefault(canonical_subset(str(r["subset"])), []).append(r)
    present = {s for by_subset in grouped.values() for s in by_subset}
    order = [s for s in SEEN + UNSEEN if s in present]
    order += sorted(present - set(order))

    models = {}
    for model, by_subset in grouped.items():
        subsets = {}
        for subset in order:
            rows = by_subset.get(subset, [])
            ok = [r for r in rows if not _is_failed(r)]
            entry: dict[str, Any] = {"count": len(ok), "failed": len(rows) - len(ok)}
            nans = {}
            for m in metrics:
                values = [float(r[m]) for r in ok if m in r and r[m] is not None]
                entry[m] = _mean(values, nan_policy)
                if n := sum(math.isnan(v) for v in values):
                    nans[m] = n
            entry["nan"] = nans
            if rows:
                subsets[subset] = entry
        groups = {}
        for group, names in (("seen", SEEN), ("unseen", UNSEEN), ("all", tuple(subsets))):
            members = [s for s in names if s in subsets]
            groups[group] = {"subsets": members} | {
                m: _mean([subsets[s][m] for s in members], "propagate") for m in metrics
            }
        models[model] = {"subsets": subsets, **groups}
    return {"metrics": metrics, "subsets": order, "nan_policy": nan_policy, "models": models}


def _fmt(value: float | None, decimals: int) -> str:
    return "–" if value is None or math.isnan(value) else f"{value:.{decimals}f}"


def format_markdown(summary: Mapping[str, Any], *, metrics: Sequence[str] = TABLE_METRICS, decimals: int = 3) -> str:
    """The paper's layout: a row per model; per subset IoU, BIoU, Em, wFm; then the seen and unseen means.

    Markdown has no column spans, so each group's first column carries the subset name. Footnotes give
    image counts, failed images and NaN counts per subset.
    """
    metrics = [m for m in metrics if m in summary["metrics"]]
    groups = [*summary["subsets"], "Seen", "Unseen"]
    header = ["Model"] + [
        f"{g} {METRIC_LABELS.get(m, m)}" if i == 0 else METRIC_LABELS.get(m, m)
        for g in groups
        for i, m in enumerate(metrics)
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for model, res in summary["models"].items():
        cells = [model]
        for g in groups:
            entry = res.get(g.lower()) if g in ("Seen", "Unseen") else res["subsets"].get(g)
            cells += [_fmt(entry.get(m) if entry else None, decimals) for m in metrics]
        lines.append("| " + " | ".join(cells) + " |")

    notes = [
        f"Seen = mean of {', '.join(SEEN)}; unseen = mean of {', '.join(UNSEEN)} (over the subsets present). "
        "Per-image means, each subset weighted equally."
    ]
    for model, res in summary["models"].items():
        counts = ", ".join(f"{s} {e['count']}" for s, e in res["subsets"].items())
        failed = ", ".join(f"{s} {e['failed']}" for s, e in res["subsets"].items() if e["failed"])
        nans = ", ".join(
            f"{s} {METRIC_LABELS.get(m, m)} {n}" for s, e in res["subsets"].items() for m, n in e["nan"].items()
        )
        note = f"{model}: images {counts}; failed images (excluded) {failed or 'none'}"
        if nans:
            note += f"; NaN values ({summary['nan_policy']}) {nans}"
        notes.append(note + ".")
    return "\n".join(lines) + "\n\n" + "\n".join(f"{i + 1}. {n}" for i, n in enumerate(notes)) + "\n"


def _json_safe(obj: Any) -> Any:
    # JSON has no NaN; null keeps the files loadable by strict parsers.
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Mapping):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    return obj


def write_csv(records: Iterable[Mapping[str, Any]], path: str | Path) -> Path:
    """Per-image CSV: model, subset (paper name), file, metrics, then any other fields, error last."""
    records = list(records)
    first = ["model", "subset", "file", *_metric_names(records)]
    rest = {k: None for r in records for k in r if k not in first and k != "error"}
    fields = [*first, *rest, "error"]
    path = Path(path)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, restval="")
        writer.writeheader()
        for r in records:
            writer.writerow({**r, "subset": canonical_subset(str(r["subset"]))})
    return path


def write_reports(
    summary: Mapping[str, Any], records: Iterable[Mapping[str, Any]], out_dir: str | Path, *, stem: str = "results"
) -> dict[str, Path]:
    """Write `{stem}.md`, `{stem}.json` (summary, NaN as null) and `{stem}_per_image.csv`; returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": out / f"{stem}.md", "json": out / f"{stem}.json", "csv": out / f"{stem}_per_image.csv"}
    paths["markdown"].write_text(format_markdown(summary))
    paths["json"].write_text(json.dumps(_json_safe(summary), indent=2) + "\n")
    write_csv(records, paths["csv"])
    return paths
