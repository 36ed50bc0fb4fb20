"""report.md of an experiment folder (python -m cxr.report, and the experiment's last stage).

The report answers "did self-supervision help?" first: SSL against random
initialization on the same labeled images, by an interval of the mAP
difference over the training seeds and the test images (`cxr.evaluation.intervals`). It says
"Yes" or "No" only when the interval excludes zero AND holds at least
MIN_SEEDS training seeds (an initialization's effect cannot be told from one
training run), else "Not shown" with the command that would decide it. Each
arm is set against the location prior and chance (`cxr.evaluation.baselines`) on the
same images. Then what ran on which data with which settings (each stage's
args.json), the results table (Bencevic et al., 2022's columns), AP50 per
class, charts (`cxr.pipeline.charts`), pictures, and the time and command of every
stage. Every path in it is relative to the report.
"""

import math
import shlex
from pathlib import Path

from cxr.evaluation.coco_metrics import format_metric
from cxr.pipeline.charts import bar_chart, line_chart
from cxr.pipeline.results import LEVEL, ExperimentFolder, read_output
from cxr.run import layout
from cxr.run.outputs import make_folder, open_output_folder
from cxr.run.reading import read_json_lines

MIN_SEEDS = 3
ARM_NAMES = {"ssl": "SSL", "random": "random", "pretrained": "pretrained"}


def verdict(difference, seeds):
    """'helped', 'hurt' or 'not shown' from the interval of SSL minus random over `seeds`
    training seeds."""
    if seeds < MIN_SEEDS or not difference.excludes_zero():
        return "not shown"
    return "helped" if difference.low > 0 else "hurt"


def _interval(interval, digits=3):
    return f"{interval.estimate:.{digits}f} [{interval.low:.{digits}f}, {interval.high:.{digits}f}]"


def _signed(interval):
    return f"{interval.estimate:+.3f} [{interval.low:+.3f}, {interval.high:+.3f}]"


def _mean(values):
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def deciding_command(command, *, seeds):
    """The experiment's `command` continued (--resume, never --replace) with MIN_SEEDS
    training seeds: those it has (`seeds`), then the lowest new ones."""
    words, kept = shlex.split(command), []
    while words:
        word = words.pop(0)
        if word == "--train-seeds" and words:
            words.pop(0)
        elif word not in ("--resume", "--replace") and not word.startswith("--train-seeds="):
            kept.append(word)
    chosen = list(seeds) + [s for s in range(MIN_SEEDS + len(seeds)) if s not in seeds]
    return shlex.join([*kept, "--resume", "--train-seeds", ",".join(map(str, chosen[:MIN_SEEDS]))])


def _answer(folder, comparison):
    """The verdict's first sentence."""
    ap = comparison["AP"]["difference"]
    seeds = len(folder.seeds)
    result = verdict(ap, seeds)
    if result == "helped":
        return "**Yes**: the mAP interval of SSL minus random lies above zero."
    if result == "hurt":
        return "**No**, it hurt: the mAP interval of SSL minus random lies below zero."
    if seeds < MIN_SEEDS:
        return (
            f"**Not shown ({seeds} training seed{'s' if seeds > 1 else ''})**: a verdict on an "
            f"initialization needs at least {MIN_SEEDS} training seeds in the interval; "
            f"`{deciding_command(folder.record['command'], seeds=folder.seeds)}`, run in this "
            "report's folder, would decide it."
        )
    return "**Not shown**: the mAP interval of SSL minus random includes zero."


def _mean_probe(folder, arm):
    """The mean macro-AUROC of an arm's backbones (the SSL ones at the main percentage)."""
    runs = folder.runs(arm, folder.main if arm == "ssl" else None)
    return _mean([(folder.probe(run) or {}).get("macro_auroc") for run in runs])


def headline(folder, comparisons):
    """The answer, the arms' mAP against each other and against the location prior."""
    percent = folder.main
    versus = comparisons.get((percent, "ssl", "random"))
    if versus is None:
        return ["The detector runs are incomplete; rerun the experiment with `--resume`."]
    test = folder.metrics(folder.runs("ssl", percent)[0])
    lines = [
        f"**Did self-supervision help?** {_answer(folder, versus)} With SimCLR on {percent}% of "
        f"the training images and {folder.labeled_images(folder.runs('ssl', percent)[0])} labeled "
        f"images for fine-tuning, mAP@[.5:.95] / mAP50: SSL {versus['AP']['first'].estimate:.3f}"
        f" / {versus['AP50']['first'].estimate:.3f}, random "
        f"{versus['AP']['second'].estimate:.3f} / {versus['AP50']['second'].estimate:.3f}; SSL "
        f"minus random {_signed(versus['AP']['difference'])} / "
        f"{_signed(versus['AP50']['difference'])} ({LEVEL:.0%} intervals over "
        f"{test['test_images']} test images with {test['test_boxes']} boxes and "
        f"{len(folder.seeds)} training seed{'s' if len(folder.seeds) > 1 else ''})."
    ]
    above = [
        f"{ARM_NAMES[arm]} {_signed(comparisons[percent, arm, 'prior']['AP50']['difference'])}"
        for arm in folder.arms
        if comparisons.get((percent, arm, "prior"))
    ]
    lines.append(
        f"Against the location prior (each class's mean training box on every test image: "
        f"mAP50 {folder.prior['AP50']:.3f}; chance {folder.chance['AP50']:.3f}), mAP50 above "
        f"the prior: {', '.join(above)}."
    )
    pretrained = comparisons.get((percent, "ssl", "pretrained"))
    if pretrained:
        lines.append(f"SSL minus pretrained: mAP {_signed(pretrained['AP']['difference'])}.")
    probes = {arm: _mean_probe(folder, arm) for arm in folder.arms}
    if probes["ssl"] is not None and probes["random"] is not None:
        pretrained = probes.get("pretrained")
        lines.append(
            f"Linear probe (macro-AUROC, mean over seeds): {probes['ssl']:.3f} for the SSL "
            f"backbone, {probes['random']:.3f} for a random one"
            + (f", {pretrained:.3f} for the pretrained one" if pretrained is not None else "")
            + "."
        )
    return [" ".join(lines)]


def _source(folder):
    config, settings = folder.config, folder.config["settings"]
    if config["vinbig"]:
        source = f"the VinBigData download in `{config['vinbig']}`"
    elif config["nih"]:
        classes = (
            "NIH's findings as VinBigData classes (`cxr.data.classes.NIH_FINDINGS`)"
            if config.get("nih_classes") == "vinbigdata"
            else "NIH's eight findings as classes"
        )
        source = (
            f"NIH ChestX-ray14 boxes and images in `{config['nih']}` (Wang et al., 2017), one "
            f"radiologist per image, split by patient, {classes}"
        )
    elif config["coco"]:
        source = (
            f"the COCO file `{config['coco']}` with its own classes, images in "
            f"`{config['coco_images']}`"
            + (
                f", split by patient (`--group-by {config['group_by']}`)"
                if config["group_by"]
                else ""
            )
        )
    else:
        source = (
            f"synthetic VinBigData from `python -m cxr.synthetic` ({settings['synthetic_images']} "
            f"images at {settings['synthetic_size']} px, seed {config['seed']}): a stand-in with "
            "the real layout and statistics, so its numbers test the machinery, not the method"
        )
    if config["extra_images"]:
        source += "; unlabeled images for SimCLR from " + ", ".join(
            f"`{p}`" for p in config["extra_images"]
        )
    return source


def data_section(folder):
    summary = read_output(folder.out / "data" / "prepare_summary.json", {})
    boxes = (
        f"{summary.get('boxes', '?')} boxes fused by WBF from {summary.get('input_boxes', '?')}"
        if summary.get("fused")
        else f"{summary.get('boxes', '?')} boxes, one reader each"
    )
    lines = [
        f"Data: {_source(folder)}. After `cxr.prepare`: {summary.get('train_images', '?')} "
        f"training and {summary.get('test_images', '?')} test images with findings ({boxes}, "
        f"{len(folder.classes)} classes), {summary.get('test_normal_images', 0)} normal test "
        f"images, and {summary.get('normal_images_kept', '?')} other images without findings.",
        "",
        "| SSL fraction | SSL pool (incl. normal and extra images) | labeled images (the rest) |",
        "|---|---|---|",
    ]
    for fraction in folder.fractions:
        run = folder.runs("ssl", layout.percent(fraction))[0]
        meta = read_output(folder.run(run) / layout.PRETRAIN / layout.BACKBONE_META, {})
        lines.append(
            f"| {layout.percent(fraction)}% | {meta.get('ssl_images', '?')} | "
            f"{folder.labeled_images(run)} |"
        )
    return lines


def _plural(count, word):
    return f"{count:g} {word}{'' if count == 1 else ('es' if word.endswith('s') else 's')}"


def settings_section(folder):
    """The settings as each stage's args.json recorded them."""
    run = folder.runs("ssl", folder.main)[0]
    ssl = (read_output(folder.run(run) / layout.PRETRAIN / layout.ARGS) or {}).get("args")
    det = (read_output(folder.run(run) / layout.ARGS) or {}).get("args")
    lines = [
        f"Preset `{folder.config['preset']}`, "
        f"{_plural(folder.config['nproc_per_node'], 'process')} per node, training "
        f"{_plural(len(folder.seeds), 'seed')} {', '.join(map(str, folder.seeds))}.",
        "",
        "| stage | settings |",
        "|---|---|",
    ]
    if ssl:
        lines.append(
            f"| SimCLR | {ssl['arch']}, {ssl['image_size']} px, {_plural(ssl['epochs'], 'epoch')}, "
            f"batch {ssl['batch_size']}, {ssl['optimizer']} lr {ssl['lr']} (warmup "
            f"{_plural(ssl['warmup_epochs'], 'epoch')}, cosine), weight decay "
            f"{ssl['weight_decay']}, views "
            f"`{ssl['views']}`, temperature {ssl['temperature']} |"
        )
    if det:
        schedule = (
            f"step decay x0.1 at {det['lr_steps']} of training"
            if det["lr_schedule"] == "step"
            else "cosine"
        )
        lines.append(
            f"| Faster R-CNN (every arm) | {det['arch']}-FPN, {det['image_size']} px, norm "
            f"{det['norm']}, {det['trainable_layers']} stages trained, "
            f"{_plural(det['epochs'], 'epoch')}, batch {det['batch_size']}, lr {det['lr']} "
            f"({det['warmup_iters']} warmup iterations from {det['warmup_factor']:g} x lr, "
            f"{schedule}), gradient clip {det['clip_grad'] or 'off'}, {det['roi_batch_size']} RoIs "
            f"per image, repeat factors t={det['repeat_threshold']} ({det['repeat_rounding']}), "
            f"{'online augmentation' if det['augment'] else 'no augmentation'} |"
        )
    lines.append(
        "| linear probe | pooled trunk features, standardized, one-vs-rest logistic regression "
        f"C=1, {len(folder.classes)} image-level labels |"
    )
    return lines


def _arm_row(folder, arm, percent, comparison):
    """One results row: the arm's means over seeds, mAP and mAP50 with intervals."""
    label = "0% (all labels)" if percent == 100 else f"{percent}%"
    runs = folder.runs(arm, percent)
    found = [folder.metrics(run) for run in runs]
    if not all(found):
        return f"| {label} | - | {ARM_NAMES[arm]} | not run | | | | | | | |"
    if comparison:
        ap, ap50 = (_interval(comparison[k]["first"]) for k in ("AP", "AP50"))
    else:
        ap, ap50 = (format_metric(_mean([m[k] for m in found]), 3) for k in ("AP", "AP50"))
    means = [
        format_metric(_mean([m[k] for m in found]), 3)
        for k in ("AP_small", "AR100", "AR_small", "AP40")
    ]
    competition = _mean([(m["competition"] or {}).get("mAP40") for m in found])
    competition = format_metric(competition, 3)
    probes = runs if arm == "ssl" else folder.runs(arm, None)
    probe = format_metric(_mean([(folder.probe(r) or {}).get("macro_auroc") for r in probes]), 3)
    return (
        f"| {label} | {folder.labeled_images(runs[0])} | {ARM_NAMES[arm]} | {ap} | {ap50} | "
        + " | ".join(means)
        + f" | {competition} | {probe} |"
    )


def results_table(folder, comparisons):
    lines = [
        "| SSL fraction | labeled images | init | mAP@[.5:.95] | mAP50 | mAP small | AR@100 | AR "
        "small | AP@0.4 | competition mAP@0.4 | probe macro-AUROC |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for fraction in folder.fractions:
        p = layout.percent(fraction)
        for arm in folder.arms:
            lines.append(_arm_row(folder, arm, p, comparisons.get((p, arm, "prior"))))
        for other in folder.arms[1:]:
            difference = comparisons.get((p, "ssl", other))
            if difference:
                lines.append(
                    f"| {p}% | | **SSL - {other}** | **{_signed(difference['AP']['difference'])}** "
                    f"| **{_signed(difference['AP50']['difference'])}** | | | | | | |"
                )
    if len(folder.fractions) > 1:
        lines.append(_arm_row(folder, "random", 100, None))
    prior, chance = folder.prior, folder.chance
    lines.append(
        f"| | | location prior | {prior['AP']:.3f} | {prior['AP50']:.3f} | | {prior['AR100']:.3f} "
        f"| | {prior['AP40']:.3f} | | |"
    )
    lines.append(f"| | | chance | {chance['AP']:.3f} | {chance['AP50']:.3f} | | | | | | |")
    return lines


def per_class_table(folder):
    """AP50 per class of each arm's first seed at the main percentage, and of the prior."""
    runs = [folder.runs(arm, folder.main)[0] for arm in folder.arms]
    metrics = [folder.metrics(run) for run in runs]
    if not all(metrics):
        return []
    columns = [*(str(run) for run in runs), "location prior"]
    rows = [*(m["per_class"] for m in metrics), folder.prior["per_class"]]
    lines = [
        "| class | test boxes | " + " | ".join(columns) + " |",
        "|---|---|" + "---|" * len(columns),
    ]
    for k, name in enumerate(folder.classes):
        values = " | ".join(format_metric(row[k]["AP50"], 3) for row in rows)
        lines.append(f"| {name} | {rows[-1][k]['gt_boxes']} | {values} |")
    return lines


def _train_records(log_path):
    """The training progress records of a log.jsonl, the last one per global step."""
    by_step = {}
    if Path(log_path).is_file():
        for record in read_json_lines(log_path, what="a training log cxr writes"):
            if isinstance(record, dict) and record.get("event") == "train":
                by_step[record["step"]] = record
    return [by_step[step] for step in sorted(by_step)]


def ssl_loss_chart(folder):
    series = []
    for fraction in folder.fractions:
        for run in folder.runs("ssl", layout.percent(fraction)):
            records = _train_records(folder.run(run) / layout.PRETRAIN / layout.LOG)
            if records:
                series.append(
                    (str(run), [r["step"] for r in records], [r["loss"] for r in records])
                )
    if not series:
        return {}
    batch = folder.config["settings"]["ssl_batch_size"] * folder.config["nproc_per_node"]
    chance = math.log(2 * batch - 1)  # NT-Xent of uniform similarities: 2N - 1 candidates
    steps = [x for _, xs, _ in series for x in xs]
    series.append(("chance", [min(steps), max(steps)], [chance, chance]))
    chart = line_chart(series, title="SimCLR loss", x_label="step", y_label="NT-Xent loss")
    return {"ssl_loss.svg": ("SimCLR loss (NT-Xent) per step", chart)}


def map_history(folder, run):
    """Test mAP after each evaluated epoch of a run, the last epoch's from its mAP stage."""
    history = read_output(folder.run(run) / layout.EVAL_HISTORY, [])
    final, last = folder.metrics(run), folder.config["settings"]["det_epochs"]
    if final and (not history or history[-1]["epoch"] < last):
        history = [*history, {"epoch": last, "AP": final["AP"], "AP50": final["AP50"]}]
    return history


def detector_charts(folder):
    """Training loss, test mAP per epoch and per-class AP50 of each arm's first seed."""
    charts, losses, maps = {}, [], []
    runs = [folder.runs(arm, folder.main)[0] for arm in folder.arms]
    for run in runs:
        records = _train_records(folder.run(run) / layout.LOG)
        if records:
            losses.append((str(run), [r["step"] for r in records], [r["loss"] for r in records]))
        history = map_history(folder, run)
        for key, label in (("AP50", "mAP50"), ("AP", "mAP")):
            if history:
                epochs = [h["epoch"] for h in history]
                maps.append((f"{run} {label}", epochs, [h[key] for h in history]))
    if losses:
        chart = line_chart(losses, title="Detection loss", x_label="step", y_label="loss")
        charts["det_loss.svg"] = ("Faster R-CNN training loss (sum of the four losses)", chart)
    if maps:
        chart = line_chart(
            maps, title="Test mAP per epoch", x_label="epoch", y_label="mAP", markers=True
        )
        charts["map_per_epoch.svg"] = ("Test mAP after each epoch", chart)
    metrics = [folder.metrics(run) for run in runs]
    if all(metrics):
        groups = [
            (str(run), [row["AP50"] for row in m["per_class"]]) for run, m in zip(runs, metrics)
        ]
        groups.append(("location prior", [row["AP50"] for row in folder.prior["per_class"]]))
        chart = bar_chart(list(folder.classes), groups, title="AP50 per class", x_label="AP50")
        charts["per_class_ap50.svg"] = ("AP50 per class (n/a: no test boxes of that class)", chart)
    return charts


def sweep_chart(folder):
    """mAP (mean over seeds) against labeled images for each arm, and the all-labels run."""
    series = []
    for arm in folder.arms:
        points = []
        for fraction in folder.fractions:
            runs = folder.runs(arm, layout.percent(fraction))
            found = [folder.metrics(run) for run in runs]
            if all(found):
                points.append((folder.labeled_images(runs[0]), _mean([m["AP"] for m in found])))
        if points:
            points.sort()
            series.append((f"{arm} init", [n for n, _ in points], [ap for _, ap in points]))
    baseline = folder.runs("random", 100)
    if all(folder.metrics(run) for run in baseline):
        ap = _mean([folder.metrics(run)["AP"] for run in baseline])
        series.append(("all labels, random", [folder.labeled_images(baseline[0])], [ap]))
    if not series:
        return {}
    chart = line_chart(
        series,
        title="mAP vs labeled images",
        x_label="labeled images",
        y_label="mAP@[.5:.95]",
        markers=True,
    )
    return {"sweep.svg": ("mAP@[.5:.95] (mean over seeds) against the labeled images", chart)}


def timing_section(folder):
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


def commands_section(folder):
    lines = [
        "Each stage ran this command from this folder, `<cxr>` being the cxr checkout (its output "
        "is in `logs/`):",
        "",
        "```",
    ]
    for name, entry in folder.record["stages"].items():
        if entry.get("command"):
            lines += [f"# {name}", entry["command"]]
    return lines + ["```"]


def pictures_section(folder):
    pictures = [
        f"runs/{folder.runs(arm, folder.main)[0]}/{layout.EVAL}/{layout.PICTURES}/"
        f"{layout.CONTACT_SHEET}"
        for arm in folder.arms
    ]
    existing = [p for p in pictures if (folder.out / p).is_file()]
    if not existing:
        return []
    lines = [
        "## Pictures",
        "",
        "Ground truth: solid boxes, name above. Predictions with score >= 0.3: dashed, name and "
        "score inside. One PNG per image next to each contact sheet.",
        "",
    ]
    return lines + [f"**{Path(p).parts[1]}**\n\n![{Path(p).parts[1]}]({p})\n" for p in existing]


NOTES = (
    "Means over the training seeds; mAP and mAP50 with {level:.0%} intervals over the training "
    "seeds and the test images (`cxr.evaluation.intervals`: the mean over the seeds +- Student's "
    "t x the square root of the seeds' variance over their number plus the test images' (a paired"
    " bootstrap), at the Welch-Satterthwaite degrees of freedom; calibrated on simulated "
    "experiments with a known truth, `studies/calibrate_intervals.py`: with 3, 5 and 10 seeds "
    "they covered it in at least 89% of them and gave a verdict without an effect at the nominal "
    "{verdicts:.0%}, where the interval they replaced gave one in up to 35%). mAP@[.5:.95], "
    "mAP50, mAP small, AR@100 and AR small are pycocotools' numbers; 'small' means boxes under 32"
    " x 32 px in the images the model reads (COCO's absolute areas). AP@0.4 is the VinBigData "
    "competition's IoU threshold with COCO's 101-point interpolation; competition mAP@0.4 is the "
    "competition's metric (VOC matching and interpolation, 'No finding' included when the test "
    "split holds normal films; n/a for other classes than VinBigData's). The location prior "
    "places each class's mean training box on every test image, scored by the class's share of "
    "training images; chance places the same boxes at random (mean of 20 draws); the AP of "
    "their tied scores is the mean over the ties' orders, "
    "so it does not depend on how the images are numbered. Per-class tables: "
    "`runs/<run>/eval/per_class.csv`."
)


def comparisons_of(folder):
    """{(percent, arm, other): intervals} of SSL against the other arms and of every
    arm against the location prior."""
    comparisons = {}
    for fraction in folder.fractions:
        p = layout.percent(fraction)
        for other in folder.arms[1:]:
            comparisons[p, "ssl", other] = folder.comparison("ssl", other, p)
        for arm in folder.arms:
            comparisons[p, arm, "prior"] = folder.comparison(arm, "prior", p)
    return {key: value for key, value in comparisons.items() if value is not None}


def write_report(out):
    """Write out/report.md and out/charts/*.svg; returns the report's path."""
    folder = ExperimentFolder(out)
    comparisons = comparisons_of(folder)
    charts = {**ssl_loss_chart(folder), **detector_charts(folder)}
    if len(folder.fractions) > 1:
        charts.update(sweep_chart(folder))
    command = "python -m cxr.report"  # under the experiment's lock when it is the report stage
    with open_output_folder(folder.out, command=command, shared_with_parent=True) as out:
        make_folder(out.inside("charts"), "python -m cxr.report")
        for file_name, (_, svg) in charts.items():
            out.write_text(f"charts/{file_name}", svg)
        out.write_text("report.md", "\n".join(report_lines(folder, comparisons, charts)))
    return folder.out / "report.md"


def report_lines(folder, comparisons, charts):
    """The report's Markdown, line by line."""
    lines = [
        "# cxr experiment report",
        "",
        *headline(folder, comparisons),
        "",
        "## What was run",
        "",
    ]
    lines += [
        "SimCLR pretraining on the SSL pool, a linear probe of its backbone and of a random one, "
        "then Faster R-CNN fine-tuned on the labeled images from the SSL backbone and from a "
        "random one"
        + (" and from the --pretrained-init weights" if "pretrained" in folder.arms else "")
        + ", by one command that differs only in `--init`, all evaluated with pycocotools on the "
        "same test images.",
        "",
        *data_section(folder),
        "",
        *settings_section(folder),
        "",
        f"Command: `{folder.record['command']}` (started {folder.record['started']}).",
        "",
        "## Results",
        "",
        *results_table(folder, comparisons),
        "",
        NOTES.format(level=LEVEL, verdicts=1 - LEVEL),
        "",
        "### AP50 per class (first training seed)",
        "",
        *per_class_table(folder),
        "",
    ]
    for file_name, (title, _) in charts.items():
        lines += [f"### {title}", "", f"![{title}](charts/{file_name})", ""]
    lines += pictures_section(folder)
    lines += ["## Time per stage", "", *timing_section(folder), "", "## Commands", ""]
    return lines + [*commands_section(folder), ""]
