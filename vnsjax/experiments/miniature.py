"""The paper's comparison in miniature: VNS-SAM against SAM, fine-tuned SAM and HQ-SAM, and its Tab. VI ablations,
all trained from one frozen SAM base on synthetic VNS scenes and evaluated on seen / unseen VNS subsets and on
salient scenes (the paper's zero-shot COCO column).

    python -m vnsjax.experiments.miniature --out results/miniature
    python -m vnsjax.experiments.miniature --out results/mini3 --seeds 0,1,2 --models sam,ft_decoder,vns_sam
    python -m vnsjax.experiments.miniature --out /tmp/quick --base DIR --quick       # tiny sizes (the tests)

1. Data (`data_pipeline.synthetic`, the VNS-SEG folder layout, fixed seed): the five training sources, the six seen
   and five unseen evaluation subsets, and the Salient set (several objects per image, one mask each).
2. Per seed, each model trains with `vnsjax.train.train` from its recipe file in configs/ (`ROWS`), on the base
   given by --base: the recipe decides what trains, the rest of the base is frozen. Every recipe gets the same
   data, steps, batch and seed, and its schedule compressed into the run (12 epochs of steps / 12, x0.1 after
   epoch 10): each row is the run `python -m vnsjax.train --config configs/RECIPE` with the overrides that
   miniature.json lists for it.
3. The base and the trained models are evaluated by `vnsjax.evaluation.runner.evaluate` (the runner of
   `python -m vnsjax.evaluate`) on the same images and prompts.
4. --out receives miniature.md (the table), miniature.json (every number, per seed), miniature.png (bars per
   group and model) and miniature_per_image.csv. It must be new, empty or an earlier output of this command.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import importlib.util
import json
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import ml_collections as mlc
from flax import nnx

from data_pipeline import synthetic, vns_seg
from vnsjax import params as params_lib
from vnsjax.build_sam import MODEL_CONFIGS
from vnsjax.evaluation import report, runner
from vnsjax.model_dir import ModelDirError, load_model, read_meta
from vnsjax.modeling.sam import Sam
from vnsjax.training.config_check import ConfigError
from vnsjax.utils.outputs import OutputError, OutputFile, check_out_dir

COMMAND = "vnsjax.experiments.miniature"
STEM = "miniature"
OUTPUTS = tuple(f"{STEM}{suffix}" for suffix in (".json", ".md", ".png", "_per_image.csv"))
GROUPS = {"seen": vns_seg.SEEN, "unseen": vns_seg.UNSEEN, "salient": vns_seg.SALIENT}
GROUP_LABELS = {"seen": "Seen", "unseen": "Unseen", "salient": "Salient"}
DATA_SEED = 0  # the images are the same for every training seed; the seeds vary initialisation and data order


class Row(NamedTuple):
    label: str  # the paper's name of the row
    recipe: str  # configs/<file>.py[:ARG]; "" for the base, evaluated as it is


# Paper Tab. VI (component ablations) and Tab. XI (fine-tuning strategies) rows, in the paper's order.
ROWS: dict[str, Row] = {
    "sam": Row("SAM (base)", ""),
    "ft_decoder": Row("FT-Decoder SAM", "sam_finetune:decoder"),
    "ft_token": Row("FT-Token SAM", "sam_finetune:token"),
    "hq_sam": Row("HQ-SAM", "hq_sam"),
    "vnst": Row("VNS-T", "vns_ablation:vnst"),
    "vnst_dpe": Row("VNS-T + DPE", "vns_ablation:no_nsfm"),
    "vnst_nsfm": Row("VNS-T + NSFM", "vns_ablation:vnst_nsfm"),
    "vns_sam": Row("VNS-SAM", "vit_b"),  # the released recipe (configs/vit_{b,l,h}.py); the base sets the size
}


@dataclasses.dataclass(frozen=True)
class Sizes:
    train_images: int  # per training source (five sources)
    eval_images: int  # per evaluation subset (eleven VNS subsets and Salient)
    steps: int
    batch_size: int


# Chosen so that one seed of all eight rows fits well inside an hour on two CPU cores with the shipped base
# (docs/experiments.md has the measured step times): 200 steps x 4 images is 4 epochs of the 200 training images.
DEFAULT_SIZES = Sizes(train_images=40, eval_images=16, steps=200, batch_size=4)
QUICK_SIZES = Sizes(train_images=2, eval_images=1, steps=2, batch_size=2)


class ExperimentError(ValueError):
    """A bad option or input; the message names it and what was expected."""


# ------------------------------------------------------------------------------------------------------------------
# Inputs
# ------------------------------------------------------------------------------------------------------------------


def default_base() -> str:
    """The base the demo trains on (configs/demo.py), which is the base shipped with vnsjax where there is one."""
    from configs import demo

    return demo.get_config().sam_checkpoint


def base_name(base: str) -> str:
    """How the table names the base: a directory by its absolute path, a built-in model by its name."""
    return str(Path(base).absolute()) if Path(base).is_dir() else base


def check_base(directory: str) -> dict[str, Any]:
    """The base's vnsjax.json; it must be a SAM model of a known model type (the trainer builds that type)."""
    meta = read_meta(directory)
    if meta["variant"] != "sam":
        raise ExperimentError(
            f"--base {directory}: expected a SAM model directory (variant sam), got {meta['variant']}"
        )
    if meta["model_type"] not in MODEL_CONFIGS:
        raise ExperimentError(
            f"--base {directory}: model type {meta['model_type']!r} is not one the trainer builds "
            f"({', '.join(MODEL_CONFIGS)})"
        )
    return meta


def check_out(out: Path) -> dict[str, OutputFile]:
    """Refuses an --out holding anything but this command's earlier outputs; checks it is writable, before any work."""
    check_out_dir(out, OUTPUTS)
    if out.is_dir() and any(out.iterdir()):
        try:
            ours = json.loads((out / f"{STEM}.json").read_text()).get("written_by") == COMMAND
        except (OSError, ValueError, AttributeError):
            ours = False
        if not ours:
            raise OutputError(
                f"--out {out} holds files of this command's names but no {STEM}.json written by it; they are kept, "
                "choose an empty or new directory"
            )
    return {name: OutputFile(out / name, f"an output of {COMMAND}", lambda _: True) for name in OUTPUTS}


def parse_list(text: str, option: str, choices: Sequence[str] | None = None) -> list[str]:
    words = [w.strip() for w in text.split(",") if w.strip()]
    bad = [w for w in words if choices is not None and w not in choices]
    if not words or bad or len(set(words)) != len(words):
        expected = f"names from {', '.join(choices)}" if choices is not None else "values"
        raise ExperimentError(f"{option} {text!r}: expected distinct comma-separated {expected}")
    return words


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(w) for w in parse_list(text, "--seeds")]
    except ValueError:
        seeds = []
    if not seeds or any(s < 0 for s in seeds):
        raise ExperimentError(f"--seeds {text!r}: expected distinct comma-separated integers >= 0, e.g. 0,1,2")
    return seeds


# ------------------------------------------------------------------------------------------------------------------
# Data, training, evaluation
# ------------------------------------------------------------------------------------------------------------------


def generate_data(root: Path, sizes: Sizes) -> dict[str, int]:
    """Training sources and evaluation sets under `root` in the VNS-SEG layout; images per subset."""
    counts = synthetic.generate(root, num=sizes.train_images, seed=DATA_SEED, subsets="train")
    eval_names = [name for names in GROUPS.values() for name in names]
    return counts | synthetic.generate(root, num=sizes.eval_images, seed=DATA_SEED, subsets=eval_names)


def recipe_config(recipe: str, *, base: str, model_type: str, data: str, seed: int, sizes: Sizes) -> mlc.ConfigDict:
    """The recipe file's config with the experiment's base, data, size and schedule; everything else as it is."""
    name, _, arg = recipe.partition(":")
    c = importlib.import_module(f"configs.{name}").get_config(arg or None)
    c.model_type = model_type
    c.sam_checkpoint = base
    c.data_dir = data
    c.train_subsets = "train"
    c.seed = seed
    c.batch_size = sizes.batch_size
    # The recipe's schedule in the run's length: num_epochs (12) epochs, the lr decay after lr_decay_epochs (10).
    c.steps_per_epoch = max(1, sizes.steps // c.num_epochs)
    c.num_train_steps = sizes.steps
    c.num_workers = 0  # 256 px images: in-process reading keeps up and leaves the cores to the step
    c.checkpoint_every_steps = 0  # only the last step (the model directory is what the experiment uses)
    c.eval_every_steps = 0
    c.eval_num_images = 0  # evaluated afterwards, all models on the same images
    c.progress_bar = False
    return c


def config_overrides(c: mlc.ConfigDict, recipe: str) -> dict[str, Any]:
    """The fields `recipe_config` set that differ from the recipe file: the command-line overrides of the run."""
    name, _, arg = recipe.partition(":")
    plain = importlib.import_module(f"configs.{name}").get_config(arg or None)
    return {k: c[k] for k in c if c[k] != plain[k]}


def recipe_spec(recipe: str) -> str:
    """ "sam_finetune:decoder" -> "configs/sam_finetune.py:decoder", as `python -m vnsjax.train --config` takes it."""
    name, colon, arg = recipe.partition(":")
    return f"configs/{name}.py{colon}{arg}" if recipe else ""


def trainable_params(c: mlc.ConfigDict) -> int:
    model, wrt = params_lib.recipe_model(c)
    return params_lib.count(nnx.state(model, wrt))


def seconds_per_step(workdir: Path) -> float:
    """Median step time of a run (its first step, the compilation, excluded) from WORKDIR/metrics.jsonl."""
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    rows = [r for r in rows if "event" not in r]  # the run's start line (precision, attention) is not a step
    times = [1.0 / r["images_per_s"] for r in rows[1:] if r.get("images_per_s")]
    batch = json.loads((workdir / "config.json").read_text())["batch_size"]
    return batch * statistics.median(times) if times else float("nan")


def train_row(config: mlc.ConfigDict, workdir: Path) -> tuple[Sam, dict[str, float]]:
    from vnsjax.train import train

    tick = time.perf_counter()
    train(config, workdir)
    seconds = time.perf_counter() - tick
    return load_model(workdir / "model"), {"seconds": seconds, "seconds_per_step": seconds_per_step(workdir)}


def group_values(summary: Mapping[str, Any], model: str) -> dict[str, dict[str, float]]:
    """{group: {metric: value}}: seen / unseen are the runner's means of subset means; salient is its subset."""
    res = summary["models"][model]
    out = {group: {m: res[group][m] for m in report.TABLE_METRICS} for group in ("seen", "unseen")}
    out["salient"] = {m: res["subsets"][vns_seg.SALIENT[0]][m] for m in report.TABLE_METRICS}
    return out


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------------------------
# The run
# ------------------------------------------------------------------------------------------------------------------


def run(
    *,
    base: str,
    workdir: Path,
    models: Sequence[str],
    seeds: Sequence[int],
    prompts: Sequence[str],
    sizes: Sizes,
    eval_batch_size: int = 4,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Data, training and evaluation in `workdir` -> (the results document, per-image records)."""
    start = time.perf_counter()
    meta = check_base(base)
    model_type = meta["model_type"]
    data = workdir / "data"
    log(f"generating synthetic data in {data}")
    counts = generate_data(data, sizes)
    seconds: dict[str, float] = {"data": time.perf_counter() - start, "train": 0.0, "evaluate": 0.0}

    rows: dict[str, dict[str, Any]] = {}
    for key in models:
        row = ROWS[key]
        entry: dict[str, Any] = {"label": row.label, "recipe": recipe_spec(row.recipe)}
        if row.recipe:
            c = recipe_config(row.recipe, base=base, model_type=model_type, data=str(data), seed=seeds[0], sizes=sizes)
            entry["trainable_params"] = trainable_params(c)
            entry["overrides"] = {k: v for k, v in config_overrides(c, row.recipe).items() if k != "seed"}
            entry["train"] = []
        else:
            entry["trainable_params"] = 0
        rows[key] = entry

    per_seed: dict[str, dict[str, Any]] = {p: {} for p in prompts}
    values: dict[str, dict[str, dict[str, dict[str, list[float]]]]] = {}
    records: list[dict[str, Any]] = []
    trained = [k for k in models if ROWS[k].recipe]
    for i, seed in enumerate(seeds):
        loaded: dict[str, Sam] = {}
        if i == 0 and "sam" in models:
            loaded["sam"] = load_model(base)  # evaluated once: the base does not depend on the training seed
        for n, key in enumerate(trained):
            c = recipe_config(
                ROWS[key].recipe, base=base, model_type=model_type, data=str(data), seed=seed, sizes=sizes
            )
            log(f"seed {seed}: training {ROWS[key].label} ({n + 1}/{len(trained)}, {sizes.steps} steps)")
            loaded[key], timing = train_row(c, workdir / "runs" / f"{key}_seed{seed}")
            rows[key]["train"].append({"seed": seed, **timing})
            seconds["train"] += timing["seconds"]
            log(f"seed {seed}: {ROWS[key].label} trained in {timing['seconds']:.0f} s")
        if not loaded:
            continue
        for prompt in prompts:
            log(f"seed {seed}: evaluating {len(loaded)} model(s), {prompt} prompt")
            tick = time.perf_counter()
            summary, recs = runner.evaluate(
                loaded,
                data,
                [name for names in GROUPS.values() for name in names],
                prompt,
                batch_size=eval_batch_size,
                progress=False,
            )
            seconds["evaluate"] += time.perf_counter() - tick
            per_seed[prompt][str(seed)] = summary
            records += [{**r, "seed": seed, "prompt": prompt} for r in recs]
            for key in loaded:
                for group, by_metric in group_values(summary, key).items():
                    for metric, value in by_metric.items():
                        values.setdefault(prompt, {}).setdefault(key, {}).setdefault(group, {}).setdefault(
                            metric, []
                        ).append(value)
        del loaded

    for key, entry in rows.items():
        entry["results"] = {
            prompt: {
                group: {metric: report.run_stats(v) for metric, v in by_metric.items()}
                for group, by_metric in values[prompt][key].items()
            }
            for prompt in prompts
        }
    first = per_seed[prompts[0]][str(seeds[0])]
    objects = first["models"][next(iter(first["models"]))]["subsets"]
    seconds["total"] = time.perf_counter() - start
    document = {
        "written_by": COMMAND,
        "base": {"name": base_name(base), "model_type": model_type, "source": meta.get("source", {})},
        "sizes": dataclasses.asdict(sizes),
        "seeds": list(seeds),
        "prompts": list(prompts),
        "data": {"seed": DATA_SEED, "images": counts, "evaluated": {s: e["count"] for s, e in objects.items()}},
        "groups": {g: list(names) for g, names in GROUPS.items()},
        "metrics": list(report.TABLE_METRICS),
        "models": rows,
        "per_seed": per_seed,
        "failed": sorted(
            {(f["subset"], f["file"]) for p in per_seed.values() for s in p.values() for f in s["failed"]}
        ),
        "seconds": seconds,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "devices": str(jax.devices())},
    }
    return document, records


# ------------------------------------------------------------------------------------------------------------------
# Reports
# ------------------------------------------------------------------------------------------------------------------


def table_rows(document: Mapping[str, Any], prompt: str) -> dict[str, dict[str, dict[str, Any]]]:
    return {key: entry["results"][prompt] for key, entry in document["models"].items()}


def format_report(document: Mapping[str, Any], command: str) -> str:
    """miniature.md: set-up, a comparison table per prompt mode, and the per-subset tables of the first seed."""
    sizes, seeds, data = document["sizes"], document["seeds"], document["data"]
    labels = {k: e["label"] for k, e in document["models"].items()}
    n_train = sum(data["images"][s] for s in vns_seg.TRAIN_SOURCES)
    evaluated = data["evaluated"]
    group_sizes = ", ".join(
        f"{GROUP_LABELS[g]} {sum(evaluated.get(s, 0) for s in names)} ({len(names)} subset{'s' * (len(names) > 1)})"
        for g, names in document["groups"].items()
    )
    base = document["base"]
    lines = [
        "# VNS-SAM and its baselines in miniature",
        "",
        f"`{command}` ({document['seconds']['total'] / 60:.1f} min on {document['machine']['cpus']} CPU cores).",
        "",
        f"Base: `{base['name']}` ({base['model_type']} SAM). Each trained row starts from it and trains only what its "
        f"recipe trains, {sizes['steps']} steps x batch {sizes['batch_size']} on {n_train} synthetic training images "
        f"(5 sources), seed{'s' * (len(seeds) > 1)} {', '.join(map(str, seeds))}"
        + (": mean ± sample standard deviation over seeds." if len(seeds) > 1 else ".")
        + f" Evaluated objects: {group_sizes}. Seen and unseen are means of subset means, as in the paper.",
        "",
    ]
    extra = {
        "Recipe": {
            k: f"`{e['recipe'].removeprefix('configs/')}`" if e["recipe"] else "–"
            for k, e in document["models"].items()
        },
        "Trainable params": {k: f"{e['trainable_params']:,}" for k, e in document["models"].items()},
    }
    for prompt in document["prompts"]:
        lines += [
            f"## {prompt} prompt",
            "",
            report.format_group_table(
                table_rows(document, prompt),
                list(document["groups"]),
                labels=labels,
                group_labels=GROUP_LABELS,
                extra=extra,
            ),
        ]
    seed = str(seeds[0])  # the base is evaluated with the first seed only, so that seed's tables have every row
    for prompt in document["prompts"]:
        lines += [
            f"## Per subset ({prompt} prompt, seed {seed})",
            "",
            report.format_markdown(document["per_seed"][prompt][seed]),
        ]
    return "\n".join(lines)


def write_outputs(
    files: Mapping[str, OutputFile], document: dict[str, Any], records: list[dict[str, Any]], command: str
) -> None:
    """The JSON first: it marks --out as this command's, so a run stopped while writing can be re-run there."""
    document = {**document, "command": command}
    files[f"{STEM}.json"].write((json.dumps(report._json_safe(document), indent=2) + "\n").encode())
    files[f"{STEM}.md"].write(format_report(document, command).encode())
    with tempfile.TemporaryDirectory() as tmp:
        labels = {k: e["label"] for k, e in document["models"].items()}
        prompt = document["prompts"][0]
        png = report.plot_group_bars(
            table_rows(document, prompt),
            list(document["groups"]),
            Path(tmp) / "plot.png",
            labels=labels,
            group_labels=GROUP_LABELS,
            title=f"Synthetic VNS scenes, {prompt} prompt, base {document['base']['model_type']} SAM",
        )
        files[f"{STEM}.png"].write(png.read_bytes())
        csv = report.write_csv(records, Path(tmp) / "per_image.csv")
        files[f"{STEM}_per_image.csv"].write(csv.read_bytes())


# ------------------------------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"python -m {COMMAND}", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="output directory: new, empty, or an earlier output of this command")
    p.add_argument("--base", default=None, help="SAM model directory to start from (default: the demo's base)")
    p.add_argument("--models", default=",".join(ROWS), help=f"comma-separated rows (default all: {','.join(ROWS)})")
    p.add_argument("--seeds", default="0", help="comma-separated training seeds; > 1: mean ± spread (default 0)")
    p.add_argument(
        "--prompts", default="box", help=f"comma-separated prompt modes from {', '.join(runner.PROMPT_MODES)}"
    )
    p.add_argument("--steps", type=int, default=None, help=f"training steps per model ({DEFAULT_SIZES.steps})")
    p.add_argument("--batch-size", type=int, default=None, help=f"training batch ({DEFAULT_SIZES.batch_size})")
    p.add_argument("--train-images", type=int, default=None, help=f"per training source ({DEFAULT_SIZES.train_images})")
    p.add_argument("--eval-images", type=int, default=None, help=f"per evaluation subset ({DEFAULT_SIZES.eval_images})")
    p.add_argument("--quick", action="store_true", help="tiny sizes, minutes (tests): " + str(QUICK_SIZES))
    p.add_argument("--workdir", default=None, help="keep the data and the training runs here (new or empty)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    command = f"python -m {COMMAND} " + shlex.join(argv)
    try:
        sizes = QUICK_SIZES if args.quick else DEFAULT_SIZES
        changes = {
            f.name: getattr(args, f.name) for f in dataclasses.fields(Sizes) if getattr(args, f.name) is not None
        }
        for name, value in changes.items():
            if value < 1:
                raise ExperimentError(f"--{name.replace('_', '-')} {value}: expected an integer >= 1")
        sizes = dataclasses.replace(sizes, **changes)
        models = parse_list(args.models, "--models", tuple(ROWS))
        models = [k for k in ROWS if k in models]  # the paper's row order
        seeds = parse_seeds(args.seeds)
        prompts = parse_list(args.prompts, "--prompts", runner.PROMPT_MODES)
        base = args.base or default_base()
        if not base:
            raise ExperimentError("no SAM base ships with this version of vnsjax; pass --base DIR (a model directory)")
        check_base(base)
        if importlib.util.find_spec("matplotlib") is None:
            raise ExperimentError("the plot needs matplotlib: pip install 'vnsjax[experiments]'")
        files = check_out(Path(args.out))
        if args.workdir is not None:
            workdir = Path(args.workdir)
            if workdir.exists() and (not workdir.is_dir() or any(workdir.iterdir())):
                raise ExperimentError(f"--workdir {workdir} exists and is not an empty directory; it is kept")
    except (ExperimentError, OutputError, ModelDirError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    try:
        with tempfile.TemporaryDirectory(prefix="vnsjax-miniature-") as tmp:
            document, records = run(
                base=base,
                workdir=Path(args.workdir or tmp),
                models=models,
                seeds=seeds,
                prompts=prompts,
                sizes=sizes,
            )
            write_outputs(files, document, records, command)
    except (ConfigError, ModelDirError, OutputError, vns_seg.DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_report({**document, "command": command}, command).split("\n## Per subset")[0])
    log(f"wrote {', '.join(str(f.path) for f in files.values())}")
    if document["failed"]:
        log(f"{len(document['failed'])} image(s) failed and are excluded from the means (listed in {STEM}.json)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
