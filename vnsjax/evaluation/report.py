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


# ------------------------------------------------------------------------------------------------------------------
# Model comparisons over groups of subsets, several runs (seeds) per model
# ------------------------------------------------------------------------------------------------------------------

# rows[model][group][metric] = {"mean": float, "std": float | None, "values": [one per run]}
GroupStats = Mapping[str, Mapping[str, Mapping[str, Mapping[str, Any]]]]


def run_stats(values: Sequence[float]) -> dict[str, Any]:
    """Mean and sample standard deviation (n - 1) of one number over runs; std is None for a single run."""
    values = [float(v) for v in values]
    mean = _mean(values, "propagate")
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else None
    return {"mean": mean, "std": std, "values": values}


def format_cell(stats: Mapping[str, Any] | None, decimals: int = 3) -> str:
    """ "0.812", or "0.812 ± 0.004" when the value has a spread over runs."""
    if stats is None:
        return "–"
    cell = _fmt(stats["mean"], decimals)
    return cell if stats.get("std") is None else f"{cell} ± {_fmt(stats['std'], decimals)}"


def format_group_table(
    rows: GroupStats,
    groups: Sequence[str],
    *,
    metrics: Sequence[str] = TABLE_METRICS,
    labels: Mapping[str, str] | None = None,
    group_labels: Mapping[str, str] | None = None,
    extra: Mapping[str, Mapping[str, str]] | None = None,
    decimals: int = 3,
) -> str:
    """The paper's comparison layout: a row per model; per group (e.g. Seen, Unseen) its metrics.

    `labels` / `group_labels` map model / group keys to the names shown; `extra[column][model]` adds columns after
    the name (e.g. the trainable parameters). As in `format_markdown`, each group's first column carries its name.
    """
    labels = labels or {}
    group_labels = group_labels or {}
    extra = extra or {}
    header = ["Model", *extra] + [
        f"{group_labels.get(g, g)} {METRIC_LABELS.get(m, m)}" if i == 0 else METRIC_LABELS.get(m, m)
        for g in groups
        for i, m in enumerate(metrics)
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for model, by_group in rows.items():
        cells = [labels.get(model, model), *(column.get(model, "") for column in extra.values())]
        cells += [format_cell(by_group.get(g, {}).get(m), decimals) for g in groups for m in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_group_bars(
    rows: GroupStats,
    groups: Sequence[str],
    path: str | Path,
    *,
    metrics: Sequence[str] = TABLE_METRICS,
    labels: Mapping[str, str] | None = None,
    group_labels: Mapping[str, str] | None = None,
    title: str = "",
) -> Path:
    """PNG of grouped bars, a panel per metric: groups on the x axis, a bar per model, the spread as error bars.

    Drawn on a bare Figure with the Agg canvas, so no GUI backend and no global pyplot state are touched.
    """
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    labels = labels or {}
    group_labels = group_labels or {}
    models = list(rows)
    cols = min(2, len(metrics))
    nrows = math.ceil(len(metrics) / cols)
    fig = Figure(figsize=(6.5 * cols, 3.6 * nrows + 0.9), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, cols, squeeze=False).ravel()
    cmap = colormaps["tab10" if len(models) <= 10 else "tab20"]
    colours = [cmap(i) for i in range(len(models))]
    width = 0.8 / max(len(models), 1)
    for ax, metric in zip(axes, metrics, strict=False):
        for i, model in enumerate(models):
            stats = [rows[model].get(g, {}).get(metric) for g in groups]
            means = [s["mean"] if s and s["mean"] is not None else float("nan") for s in stats]
            errs = [s["std"] if s and s.get("std") is not None else 0.0 for s in stats]
            xs = [j + (i - (len(models) - 1) / 2) * width for j in range(len(groups))]
            ax.bar(
                xs,
                means,
                width,
                yerr=errs if any(errs) else None,
                capsize=2,
                color=colours[i],
                label=labels.get(model, model),
            )
        ax.set_xticks(range(len(groups)), [group_labels.get(g, g) for g in groups])
        ax.set_ylim(0, 1)
        ax.set_ylabel(METRIC_LABELS.get(metric, metric))
        ax.grid(axis="y", alpha=0.3)
    for ax in axes[len(metrics) :]:
        ax.set_visible(False)
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="outside lower center", ncols=min(len(models), 4), frameon=False)
    if title:
        fig.suptitle(title)
    path = Path(path)
    fig.savefig(path, format="png", dpi=110)
    return path
