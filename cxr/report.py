"""report.md for an experiment folder written by `python -m cxr.experiment`.

The report answers "did self-supervision help?" in its first lines (SSL vs
random initialization on the same labeled images, by mAP and by the linear
probe). The answer follows from a paired bootstrap interval of the mAP
difference over the test images and the training seeds (`cxr.bootstrap`):
"Yes" or "No" only when the interval excludes zero, else "Not shown". It
then says what was run on what data with which settings (read from each
stage's args.json), gives the
results in the paper's table layout (Bencevic et al., 2022: mAP@[.5:.95],
mAP50, mAP small, AR@100, AR small, labeled images), charts (SSL loss,
detection losses, mAP per epoch, per-class AP, and with several SSL fractions
mAP against labeled images), pictures of detections, and the time each stage
took. Everything is read from the files the stages wrote; the charts are SVGs
from `cxr.svg`.
"""

import json
import math
from pathlib import Path

import numpy as np

from .average_precision import average_precision, match_detections
from .bootstrap import paired_bootstrap
from .classes import CLASS_NAMES
from .coco_metrics import coco_ground_truth, format_metric
from .outputs import atomic_write_text
from .svg import bar_chart, line_chart

BOOTSTRAP_REPLICATES = 2000
LEVEL = 0.9


def _read_json(path, default=None):
    path = Path(path)
    return json.loads(path.read_text()) if path.is_file() else default


def _train_records(log_path):
    """The training progress records of a log.jsonl, last one per global step."""
    by_step = {}
    if Path(log_path).is_file():
        for line in Path(log_path).read_text().splitlines():
            record = json.loads(line)
            if record.get("event") == "train":
                by_step[record["step"]] = record
    return [by_step[step] for step in sorted(by_step)]


def percent(fraction):
    """A fraction as the whole percent that names its runs (0.6 -> 60: runs/ssl60-s0)."""
    return round(fraction * 100)


def run_name(init, percent_, seed):
    """The run folder of one arm: ssl60-s0, random60-s0, random100-s0; the random
    backbone of the probe baseline (no fraction): random-s0."""
    return f"{init}{'' if percent_ is None else percent_}-s{seed}"


def verdict(difference):
    """'helped', 'hurt' or 'not shown' from the interval of SSL minus random."""
    if not difference.excludes_zero():
        return "not shown"
    return "helped" if difference.low > 0 else "hurt"


def map_summary(categories, counts):
    """mAP@[.5:.95] and mAP50 of one run on the test images taken counts[i] times."""
    per_class = [ap for ap in (average_precision(c, counts) for c in categories) if ap is not None]
    if not per_class:
        return {"AP": None, "AP50": None}
    return {
        "AP": float(np.mean([ap.mean() for ap in per_class])),
        "AP50": float(np.mean([ap[0] for ap in per_class])),
    }


class ExperimentFolder:
    """Read access to what the stages of one experiment wrote."""

    def __init__(self, out):
        self.out = Path(out)
        self.record = _read_json(self.out / "experiment.json")
        self.config = self.record["config"]
        self.fractions = self.config["ssl_fractions"]
        self.seeds = self.config["train_seeds"]
        self._ground_truth = None

    def run(self, name):
        return self.out / "runs" / name

    def names(self, init, percent_):
        """The runs of one arm (or, percent_ None, the random probe backbones), one per
        training seed."""
        return [run_name(init, percent_, seed) for seed in self.seeds]

    def metrics(self, name):
        return _read_json(self.run(name) / "eval" / "metrics.json")

    def labeled_images(self, name):
        path = self.run(name) / "labeled_images.txt"
        return len(path.read_text().split()) if path.is_file() else None

    def probe(self, name):
        """The probe of an SSL run's backbone, or of the random backbone random-sS."""
        folder = self.run(name) / "eval"
        if name.startswith("ssl"):
            return _read_json(folder / "probe-ssl.json")
        return _read_json(folder / f"probe-random-seed{name.rsplit('-s', 1)[1]}.json")

    def matches(self, name):
        """Per-category matches of a run's test predictions (cxr.average_precision)."""
        if self._ground_truth is None:
            dataset = _read_json(self.out / "data" / "test_annotations.json")
            self._ground_truth = dataset, coco_ground_truth(dataset)
        results = _read_json(self.run(name) / "eval" / "test_predictions.json")
        return match_detections(self._ground_truth[1], results)[1]

    def comparison(self, percent_):
        """Paired bootstrap of SSL vs random at one SSL percentage, or None if a run is missing."""
        ssl, random = self.names("ssl", percent_), self.names("random", percent_)
        if not all(self.metrics(name) for name in ssl + random):
            return None
        first, second = [self.matches(n) for n in ssl], [self.matches(n) for n in random]
        return paired_bootstrap(
            first,
            second,
            len(first[0][0].ground_truth),
            map_summary,
            replicates=BOOTSTRAP_REPLICATES,
            level=LEVEL,
        )


def _mean(values):
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def _interval(interval, digits=3):
    return f"{interval.estimate:.{digits}f} [{interval.low:.{digits}f}, {interval.high:.{digits}f}]"


def _headline(folder, main, comparison):
    if comparison is None:
        return ["The detector runs are incomplete; rerun with `--resume`."]
    ap, ap50 = comparison["AP"]["difference"], comparison["AP50"]["difference"]
    answer = {"helped": "**Yes**", "hurt": "**No** - it hurt", "not shown": "**Not shown**"}[
        verdict(ap)
    ]
    ssl_name = folder.names("ssl", main)[0]
    test = folder.metrics(ssl_name)
    seeds = len(folder.seeds)
    lines = [
        f"**Did self-supervision help?** {answer}. With SimCLR on {main}% of the training images "
        f"and {folder.labeled_images(ssl_name)} labeled images for fine-tuning, the detector "
        "started from the SSL backbone reaches mAP@[.5:.95] "
        f"**{comparison['AP']['first'].estimate:.3f}** and mAP50 "
        f"**{comparison['AP50']['first'].estimate:.3f}**, against "
        f"**{comparison['AP']['second'].estimate:.3f}** and "
        f"**{comparison['AP50']['second'].estimate:.3f}** from a random backbone trained the same "
        f"way. SSL minus random: mAP {_interval(ap)}, mAP50 {_interval(ap50)} ({LEVEL:.0%} paired "
        f"bootstrap intervals over the {test['test_images']} test images with {test['test_boxes']} "
        f"boxes and the {seeds} training seed{'s' if seeds > 1 else ''}"
        f"{'' if seeds > 1 else ', so training randomness is not in them'}). "
        + {
            "helped": "The mAP interval lies above zero.",
            "hurt": "The mAP interval lies below zero.",
            "not shown": "The mAP interval includes zero: this run cannot tell the two starts "
            "apart.",
        }[verdict(ap)]
    ]
    probe_ssl = _mean(
        [(folder.probe(n) or {}).get("macro_auroc") for n in folder.names("ssl", main)]
    )
    probe_random = _mean(
        [(folder.probe(n) or {}).get("macro_auroc") for n in folder.names("random", None)]
    )
    if probe_ssl is not None and probe_random is not None:
        lines.append(
            f"Linear probe (macro-AUROC, mean over seeds, no interval): {probe_ssl:.3f} for the "
            f"SSL backbone against {probe_random:.3f} for a random one."
        )
    return [" ".join(lines)]


def _data_section(folder):
    summary = _read_json(folder.out / "data" / "prepare_summary.json", {})
    settings = folder.config["settings"]
    if folder.config["vinbig"]:
        source = f"the real VinBigData download in `{folder.config['vinbig']}`"
    elif folder.config.get("nih"):
        source = (
            f"real radiographs: NIH ChestX-ray14 boxes and images in `{folder.config['nih']}` "
            "(Wang et al., 2017, 'ChestX-ray8'), one radiologist per image, train/test split by "
            "patient, NIH's findings mapped to VinBigData classes (`cxr.classes.NIH_FINDINGS`)"
        )
    else:
        source = (
            f"synthetic VinBigData from `python -m cxr.synthetic` ({settings['synthetic_images']} "
            f"images at {settings['synthetic_size']} px, seed {folder.config['seed']}): a stand-in "
            "with the real layout and statistics, so its numbers test the machinery, not the "
            "method on real radiographs"
        )
    if folder.config.get("extra_images"):
        folders = ", ".join(f"`{p}`" for p in folder.config["extra_images"])
        source += f"; unlabeled images for SimCLR from {folders}"
    normal_test = summary.get("test_normal_images", 0)
    if folder.config.get("nih"):
        boxes = f"{summary.get('fused_boxes', '?')} boxes, one reader each, not fused"
        prepared = "one radiologist per image"
    else:
        boxes = (
            f"{summary.get('fused_boxes', '?')} fused boxes from {summary.get('csv_boxes', '?')} "
            "reader boxes"
        )
        prepared = "readers' boxes fused by WBF at IoU 0.2"
    lines = [
        f"Data: {source}. After `cxr.prepare` ({prepared}): "
        f"{summary.get('train_images', '?')} training and {summary.get('test_images', '?')} test "
        f"images with findings ({boxes}), {normal_test} normal test images, and "
        f"{summary.get('normal_images_kept', '?')} other images without findings.",
        "",
    ]
    lines.append("| SSL fraction | SSL pool (incl. normal images) | labeled images (the rest) |")
    lines.append("|---|---|---|")
    for fraction in folder.fractions:
        name = folder.names("ssl", percent(fraction))[0]
        meta = _read_json(folder.run(name) / "pretrain" / "pretrained-backbone.json", {})
        lines.append(
            f"| {percent(fraction)}% | {meta.get('ssl_images', '?')} | "
            f"{folder.labeled_images(name)} |"
        )
    return lines


def _settings_section(folder):
    """The settings as each stage's args.json recorded them."""
    name = folder.names("ssl", percent(folder.fractions[0]))[0]
    ssl = (_read_json(folder.run(name) / "pretrain" / "args.json") or {}).get("args", {})
    det = (_read_json(folder.run(name) / "args.json") or {}).get("args", {})
    lines = [
        f"Preset `{folder.config['preset']}`, processes per node "
        f"{folder.config['nproc_per_node']}, training seeds {', '.join(map(str, folder.seeds))}.",
        "",
        "| stage | settings |",
        "|---|---|",
    ]
    if ssl:
        lines.append(
            f"| SimCLR | {ssl['arch']}, {ssl['image_size']} px, {ssl['epochs']} epochs, batch "
            f"{ssl['batch_size']}, {ssl['optimizer']} lr {ssl['lr']} (warmup "
            f"{ssl['warmup_epochs']} epochs, cosine), weight decay {ssl['weight_decay']}, views "
            f"`{ssl['views']}`, temperature {ssl['temperature']} |"
        )
    if det:
        schedule = (
            f"step decay x0.1 at {det['lr_steps']} of training"
            if det["lr_schedule"] == "step"
            else "cosine"
        )
        lines.append(
            f"| Faster R-CNN (both arms) | {det['arch']}-FPN, {det['image_size']} px, "
            f"{det['anchors']} anchors, norm {det['norm']}, {det['trainable_layers']} stages "
            f"trained, {det['epochs']} epochs, batch {det['batch_size']}, lr {det['lr']} "
            f"({det['warmup_iters']} warmup iterations from {det.get('warmup_factor', 0):g} x lr, "
            f"{schedule}), gradient clip {det['clip_grad'] or 'off'}, {det['roi_batch_size']} RoIs "
            f"per image, repeat factors t={det['repeat_threshold']} ({det['repeat_rounding']}), "
            f"{'online augmentation' if det['augment'] else 'no augmentation'} |"
        )
    lines.append(
        "| linear probe | pooled trunk features, standardized, one-vs-rest logistic regression "
        "C=1, 14 image-level labels |"
    )
    return lines


def _results_table(folder, comparisons):
    lines = [
        "| SSL fraction | labeled images | init | mAP@[.5:.95] | mAP50 | mAP small | AR@100 | AR "
        "small | AP@0.4 | competition mAP@0.4 | probe macro-AUROC |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    rows = [(percent(f), init) for f in folder.fractions for init in ("ssl", "random")]
    if len(folder.fractions) > 1:
        rows.append((100, "random"))
    for p, init in rows:
        label = "0% (all labels)" if p == 100 else f"{p}%"
        names = folder.names(init, p)
        found = [folder.metrics(n) for n in names]
        if not all(found):
            lines.append(f"| {label} | - | {init} | not run | | | | | | | |")
            continue
        comparison = comparisons.get(p)
        arm = "first" if init == "ssl" else "second"
        ap, ap50 = (
            _interval(comparison[k][arm])
            if comparison
            else format_metric(_mean([m[k] for m in found]), 3)
            for k in ("AP", "AP50")
        )
        means = {
            k: format_metric(_mean([m[k] for m in found]), 3)
            for k in ("AP_small", "AR100", "AR_small", "AP40")
        }
        competition = format_metric(
            _mean([m.get("competition", {}).get("mAP40") for m in found]), 3
        )
        probes = names if init == "ssl" else folder.names("random", None)
        probe = format_metric(
            _mean([(folder.probe(n) or {}).get("macro_auroc") for n in probes]), 3
        )
        lines.append(
            f"| {label} | {folder.labeled_images(names[0])} | {'SSL' if init == 'ssl' else init} | "
            f"{ap} | {ap50} | {means['AP_small']} | {means['AR100']} | {means['AR_small']} | "
            f"{means['AP40']} | {competition} | {probe} |"
        )
        if init == "random" and comparison:
            lines.append(
                f"| {label} | | **SSL - random** | **{_interval(comparison['AP']['difference'])}** "
                f"| **{_interval(comparison['AP50']['difference'])}** | | | | | | |"
            )
    return lines


def _ssl_loss_chart(folder):
    series = []
    for fraction in folder.fractions:
        for name in folder.names("ssl", percent(fraction)):
            records = _train_records(folder.run(name) / "pretrain" / "log.jsonl")
            if records:
                series.append((name, [r["step"] for r in records], [r["loss"] for r in records]))
    if not series:
        return {}
    batch = folder.config["settings"]["ssl_batch_size"] * folder.config["nproc_per_node"]
    chance = math.log(2 * batch - 1)  # NT-Xent of uniform similarities: 2N - 1 candidates
    steps = [x for _, xs, _ in series for x in xs]
    series.append(("chance", [min(steps), max(steps)], [chance, chance]))
    return {
        "ssl_loss.svg": (
            "SimCLR loss (NT-Xent) per step",
            line_chart(series, "SimCLR loss", "step", "NT-Xent loss"),
        )
    }


def _detector_charts(folder, main):
    """Training loss, test mAP per epoch and per-class AP50 of both arms at `main`%, first seed."""
    charts, loss_series, map_series = {}, [], []
    names = [folder.names(init, main)[0] for init in ("ssl", "random")]
    for name in names:
        records = _train_records(folder.run(name) / "log.jsonl")
        if records:
            loss_series.append((name, [r["step"] for r in records], [r["loss"] for r in records]))
        history = _read_json(folder.run(name) / "eval_history.json", [])
        for key, label in (("AP50", "mAP50"), ("AP", "mAP")):
            if history:
                map_series.append(
                    (f"{name} {label}", [h["epoch"] for h in history], [h[key] for h in history])
                )
    if loss_series:
        charts["det_loss.svg"] = (
            "Faster R-CNN training loss (sum of the four losses)",
            line_chart(loss_series, "Detection loss", "step", "loss"),
        )
    if map_series:
        charts["map_per_epoch.svg"] = (
            "Test mAP after each epoch",
            line_chart(map_series, "Test mAP per epoch", "epoch", "mAP", markers=True),
        )
    metrics = [folder.metrics(name) for name in names]
    if all(metrics):
        groups = [
            (name, [row["AP50"] for row in m["per_class"]]) for name, m in zip(names, metrics)
        ]
        charts["per_class_ap50.svg"] = (
            "AP50 per class (n/a: no test boxes of that class)",
            bar_chart(list(CLASS_NAMES), groups, "AP50 per class", "AP50"),
        )
    return charts


def _sweep_chart(folder):
    """mAP (mean over seeds) against labeled images for each init, with the all-labels baseline."""
    series = []
    for init in ("ssl", "random"):
        points = []
        for fraction in folder.fractions:
            names = folder.names(init, percent(fraction))
            found = [folder.metrics(n) for n in names]
            if all(found):
                points.append((folder.labeled_images(names[0]), _mean([m["AP"] for m in found])))
        if points:
            points.sort()
            series.append((f"{init} init", [n for n, _ in points], [ap for _, ap in points]))
    baseline = [folder.metrics(n) for n in folder.names("random", 100)]
    if all(baseline):
        series.append(
            (
                "all labels, random",
                [folder.labeled_images(folder.names("random", 100)[0])],
                [_mean([m["AP"] for m in baseline])],
            )
        )
    if not series:
        return {}
    return {
        "sweep.svg": (
            "mAP@[.5:.95] (mean over seeds) against the number of labeled images",
            line_chart(
                series, "mAP vs labeled images", "labeled images", "mAP@[.5:.95]", markers=True
            ),
        )
    }


def _charts(folder, main):
    """{file name: (title, svg text)} of every chart the data allows."""
    charts = {**_ssl_loss_chart(folder), **_detector_charts(folder, main)}
    if len(folder.fractions) > 1:
        charts.update(_sweep_chart(folder))
    return charts


def _timing_section(folder):
    lines = ["| stage | what | seconds |", "|---|---|---|"]
    total = 0.0
    for name, entry in folder.record["stages"].items():
        if name == "report":
            continue
        seconds = entry.get("seconds")
        total += seconds or 0.0
        shown = format_metric(seconds, 0) if seconds is not None else entry["status"]
        lines.append(f"| {name} | {entry['description']} | {shown} |")
    lines.append(f"| **total** | | **{total:.0f}** ({total / 60:.1f} min) |")
    return lines


def write_report(out):
    """Write out/report.md and out/charts/*.svg; returns the report's path."""
    folder = ExperimentFolder(out)
    main = percent(folder.fractions[0])
    comparisons = {percent(f): folder.comparison(percent(f)) for f in folder.fractions}
    charts_dir = folder.out / "charts"
    charts_dir.mkdir(exist_ok=True)
    charts = _charts(folder, main)
    for file_name, (_, svg) in charts.items():
        atomic_write_text(charts_dir / file_name, svg)
    lines = [
        "# cxr experiment report",
        "",
        *_headline(folder, main, comparisons[main]),
        "",
        "## What was run",
        "",
        "SimCLR pretraining on the SSL pool, a linear probe of its backbone and of a random one, "
        "then Faster R-CNN fine-tuned on the labeled images twice - from the SSL backbone and "
        "from a random backbone, by one command that differs only in `--init` - and both "
        "evaluated with pycocotools on the same test images.",
        "",
        *_data_section(folder),
        "",
        *_settings_section(folder),
        "",
        f"Command: `{folder.record['command']}` (started {folder.record['started']}).",
        "",
        "## Results",
        "",
        *_results_table(folder, comparisons),
        "",
        f"Means over the training seeds; mAP and mAP50 with {LEVEL:.0%} paired bootstrap intervals "
        "over the test images and the seeds (`cxr.bootstrap`). mAP@[.5:.95], mAP50, mAP small, "
        "AR@100 and AR small are pycocotools' numbers; 'small' means boxes under 32 x 32 px in "
        "the images the model reads (COCO's absolute areas), so at small image sizes nearly every "
        "box is small. AP@0.4 is the VinBigData competition's IoU threshold with COCO's 101-point "
        "interpolation; competition mAP@0.4 is the competition's metric (VOC interpolation, 'No "
        "finding' included when the test split holds normal films; `cxr.coco_metrics`). Per-class "
        "tables: `runs/<run>/eval/per_class.csv`.",
        "",
    ]
    for file_name, (title, _) in charts.items():
        lines += [f"### {title}", "", f"![{title}](charts/{file_name})", ""]
    pictures = [
        f"runs/{folder.names(init, main)[0]}/eval/visualize/contact_sheet.png"
        for init in ("ssl", "random")
    ]
    existing = [p for p in pictures if (folder.out / p).is_file()]
    if existing:
        lines += [
            "## Pictures",
            "",
            "Ground truth: solid boxes, name above. Predictions with score >= 0.3: dashed, "
            "name and score inside. One PNG per image next to each contact sheet.",
            "",
        ]
        lines += [f"**{Path(p).parts[1]}**\n\n![{Path(p).parts[1]}]({p})\n" for p in existing]
    lines += [
        "## Time per stage",
        "",
        *_timing_section(folder),
        "",
        "## Commands",
        "",
        "Each stage ran this command from the repository root (logs in `logs/`):",
        "",
        "```",
    ]
    lines += [
        f"# {name}\n{entry.get('command', '')}" for name, entry in folder.record["stages"].items()
    ]
    lines += ["```", ""]
    path = folder.out / "report.md"
    atomic_write_text(path, "\n".join(lines))
    return path
