"""report.md for an experiment folder written by `python -m cxr.experiment`.

The report answers "did self-supervision help?" in its first lines (SSL vs
random initialization on the same labeled images, by mAP and by the linear
probe), then says what was run on what data with which settings, gives the
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

from .classes import CLASS_NAMES
from .outputs import atomic_write_text
from .svg import bar_chart, line_chart


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


def _fmt(value, digits=3):
    return "n/a" if value is None else f"{value:.{digits}f}"


def percent(fraction):
    """A fraction as the whole percent that names its runs (0.6 -> 60: runs/ssl60)."""
    return round(fraction * 100)


def verdict(ssl, random):
    """'helped', 'hurt' or 'mixed' from the mAP and mAP50 of the two inits."""
    ahead = [ssl[k] > random[k] for k in ("AP", "AP50")]
    behind = [ssl[k] < random[k] for k in ("AP", "AP50")]
    return "helped" if all(ahead) else "hurt" if all(behind) else "mixed"


class ExperimentFolder:
    """Read access to what the stages of one experiment wrote."""

    def __init__(self, out):
        self.out = Path(out)
        self.record = _read_json(self.out / "experiment.json")
        self.config = self.record["config"]
        self.fractions = self.config["ssl_fractions"]

    def run(self, name):
        return self.out / "runs" / name

    def metrics(self, name):
        return _read_json(self.run(name) / "eval" / "metrics.json")

    def labeled_images(self, name):
        path = self.run(name) / "labeled_images.txt"
        return len(path.read_text().split()) if path.is_file() else None

    def probe(self, name):
        folder = self.run(name) / "eval"
        return _read_json(folder / ("probe-ssl.json" if name.startswith("ssl")
                                    else f"probe-random-seed{self.config['seed']}.json"))


def _headline(folder, main):
    ssl, random = folder.metrics(f"ssl{main}"), folder.metrics(f"random{main}")
    probe_ssl, probe_random = folder.probe(f"ssl{main}"), folder.probe("random")
    if not (ssl and random):
        return ["The detector runs are incomplete; rerun with `--resume`."]
    answer = {"helped": "**Yes**", "hurt": "**No** - it hurt", "mixed": "**Not clearly**"}[verdict(ssl, random)]
    lines = [f"**Did self-supervision help?** {answer}, on this run: with SimCLR on {main}% of the training images "
             f"and {folder.labeled_images(f'ssl{main}')} labeled images for fine-tuning, the detector started from "
             f"the SSL backbone reaches mAP@[.5:.95] **{_fmt(ssl['AP'])}** and mAP50 **{_fmt(ssl['AP50'])}**, "
             f"against **{_fmt(random['AP'])}** and **{_fmt(random['AP50'])}** from a random backbone "
             f"(difference {ssl['AP'] - random['AP']:+.3f} and {ssl['AP50'] - random['AP50']:+.3f})."]
    if probe_ssl and probe_random:
        probe_ahead = probe_ssl["macro_auroc"] > probe_random["macro_auroc"]
        agrees = probe_ahead == (ssl["AP50"] > random["AP50"])
        lines.append(f"The linear probe {'agrees' if agrees else 'disagrees'}: macro-AUROC "
                     f"{_fmt(probe_ssl['macro_auroc'])} for the SSL backbone against "
                     f"{_fmt(probe_random['macro_auroc'])} for a random one.")
    lines.append(f"One seed, {ssl['test_images']} test images with {ssl['test_boxes']} boxes: differences of a few "
                 "hundredths are within the noise of a run this small.")
    return [" ".join(lines)]


def _data_section(folder):
    summary = _read_json(folder.out / "data" / "prepare_summary.json", {})
    settings = folder.config["settings"]
    source = (f"the real VinBigData download in `{folder.config['vinbig']}`" if folder.config["vinbig"] else
              f"synthetic VinBigData from `python -m cxr.synthetic` ({settings['synthetic_images']} images at "
              f"{settings['synthetic_size']} px, seed {folder.config['seed']}): a stand-in with the real layout and "
              "statistics, so its numbers test the machinery, not the method on real radiographs")
    lines = [f"Data: {source}. After `cxr.prepare` (readers' boxes fused by WBF at IoU 0.2): "
             f"{summary.get('train_images', '?')} training and {summary.get('test_images', '?')} test images with "
             f"findings ({summary.get('fused_boxes', '?')} fused boxes from {summary.get('csv_boxes', '?')} reader "
             f"boxes), and {summary.get('normal_images_kept', '?')} images without findings.", ""]
    lines.append("| SSL fraction | SSL pool (incl. normal images) | labeled images (the rest) |")
    lines.append("|---|---|---|")
    for fraction in folder.fractions:
        p = percent(fraction)
        meta = _read_json(folder.run(f"ssl{p}") / "pretrain" / "pretrained-backbone.json", {})
        lines.append(f"| {p}% | {meta.get('ssl_images', '?')} | {folder.labeled_images(f'ssl{p}')} |")
    return lines


def _settings_section(folder):
    s = folder.config["settings"]
    return [f"Preset `{folder.config['preset']}`, processes per node {folder.config['nproc_per_node']}.", "",
            "| stage | settings |", "|---|---|",
            f"| SimCLR | {s['arch']}, {s['ssl_image_size']} px, {s['ssl_epochs']} epochs, batch {s['ssl_batch_size']}, "
            f"lr {s['ssl_lr']} (warmup {s['ssl_warmup_epochs']} epochs, cosine), views `{s['ssl_views']}`, "
            f"temperature {s['ssl_temperature']} |",
            f"| Faster R-CNN | {s['arch']}-FPN, {s['det_image_size']} px, {s['det_epochs']} epochs, batch "
            f"{s['det_batch_size']}, lr {s['det_lr']} ({s['det_warmup_iters']} warmup iterations, step decay), "
            f"{s['det_roi_batch_size']} RoIs per image, repeat factors t=0.4, online augmentation |",
            "| linear probe | pooled trunk features, standardized, one-vs-rest logistic regression C=1, "
            "14 image-level labels |"]


def _results_table(folder):
    lines = ["| SSL fraction | labeled images | init | mAP@[.5:.95] | mAP50 | mAP small | AR@100 | AR small | "
             "AP@0.4 | probe macro-AUROC |", "|---|---|---|---|---|---|---|---|---|---|"]
    rows = [(f"{percent(f)}%", f"{init}{percent(f)}", init) for f in folder.fractions for init in ("ssl", "random")]
    if len(folder.fractions) > 1:
        rows.append(("0% (all labels)", "random100", "random"))
    for fraction, name, init in rows:
        m = folder.metrics(name)
        if m is None:
            lines.append(f"| {fraction} | - | {init} | not run | | | | | | |")
            continue
        probe = folder.probe(name if init == "ssl" else "random")
        lines.append(f"| {fraction} | {folder.labeled_images(name)} | {init.upper() if init == 'ssl' else init} | "
                     f"{_fmt(m['AP'])} | {_fmt(m['AP50'])} | {_fmt(m['AP_small'])} | {_fmt(m['AR100'])} | "
                     f"{_fmt(m['AR_small'])} | {_fmt(m['AP40'])} | {_fmt(probe and probe['macro_auroc'])} |")
    return lines


def _ssl_loss_chart(folder):
    series = []
    for fraction in folder.fractions:
        records = _train_records(folder.run(f"ssl{percent(fraction)}") / "pretrain" / "log.jsonl")
        if records:
            series.append((f"SSL {percent(fraction)}%", [r["step"] for r in records], [r["loss"] for r in records]))
    if not series:
        return {}
    batch = folder.config["settings"]["ssl_batch_size"] * folder.config["nproc_per_node"]
    chance = math.log(2 * batch - 1)          # NT-Xent of uniform similarities: 2N - 1 candidates
    steps = [x for _, xs, _ in series for x in xs]
    series.append(("chance", [min(steps), max(steps)], [chance, chance]))
    return {"ssl_loss.svg": ("SimCLR loss (NT-Xent) per step", line_chart(series, "SimCLR loss", "step",
                                                                         "NT-Xent loss"))}


def _detector_charts(folder, main):
    """Training loss, test mAP per epoch and per-class AP50 of the SSL and random runs at `main`%."""
    charts, loss_series, map_series = {}, [], []
    names = [f"{init}{main}" for init in ("ssl", "random")]
    for name in names:
        records = _train_records(folder.run(name) / "log.jsonl")
        if records:
            loss_series.append((name, [r["step"] for r in records], [r["loss"] for r in records]))
        history = _read_json(folder.run(name) / "eval_history.json", [])
        for key, label in (("AP50", "mAP50"), ("AP", "mAP")):
            if history:
                map_series.append((f"{name} {label}", [h["epoch"] for h in history], [h[key] for h in history]))
    if loss_series:
        charts["det_loss.svg"] = ("Faster R-CNN training loss (sum of the four losses)",
                                  line_chart(loss_series, "Detection loss", "step", "loss"))
    if map_series:
        charts["map_per_epoch.svg"] = ("Test mAP after each epoch",
                                       line_chart(map_series, "Test mAP per epoch", "epoch", "mAP", markers=True))
    metrics = [folder.metrics(name) for name in names]
    if all(metrics):
        groups = [(name, [row["AP50"] for row in m["per_class"]]) for name, m in zip(names, metrics)]
        charts["per_class_ap50.svg"] = ("AP50 per class (n/a: no test boxes of that class)",
                                        bar_chart(list(CLASS_NAMES), groups, "AP50 per class", "AP50"))
    return charts


def _sweep_chart(folder):
    """mAP against labeled images for each init, with the all-labels baseline."""
    series = []
    for init in ("ssl", "random"):
        names = [f"{init}{percent(f)}" for f in folder.fractions]
        points = sorted((folder.labeled_images(n), folder.metrics(n)["AP"]) for n in names if folder.metrics(n))
        if points:
            series.append((f"{init} init", [n for n, _ in points], [ap for _, ap in points]))
    baseline = folder.metrics("random100")
    if baseline:
        series.append(("all labels, random", [folder.labeled_images("random100")], [baseline["AP"]]))
    if not series:
        return {}
    return {"sweep.svg": ("mAP@[.5:.95] against the number of labeled images",
                          line_chart(series, "mAP vs labeled images", "labeled images", "mAP@[.5:.95]",
                                     markers=True))}


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
        shown = _fmt(seconds, 0) if seconds is not None else entry["status"]
        lines.append(f"| {name} | {entry['description']} | {shown} |")
    lines.append(f"| **total** | | **{total:.0f}** ({total / 60:.1f} min) |")
    return lines


def write_report(out):
    """Write out/report.md and out/charts/*.svg; returns the report's path."""
    folder = ExperimentFolder(out)
    main = percent(folder.fractions[0])
    charts_dir = folder.out / "charts"
    charts_dir.mkdir(exist_ok=True)
    charts = _charts(folder, main)
    for file_name, (_, svg) in charts.items():
        atomic_write_text(charts_dir / file_name, svg)
    lines = ["# cxr experiment report", "", *_headline(folder, main), "",
             "## What was run", "",
             "SimCLR pretraining on the SSL pool, a linear probe of its backbone and of a random one, then Faster "
             "R-CNN fine-tuned on the labeled images twice - from the SSL backbone and from a random backbone - "
             "and both evaluated with pycocotools on the same test images.", "",
             *_data_section(folder), "", *_settings_section(folder), "",
             f"Command: `{folder.record['command']}` (started {folder.record['started']}).", "",
             "## Results", "", *_results_table(folder), "",
             "mAP@[.5:.95], mAP50, mAP small, AR@100 and AR small are pycocotools' numbers; AP@0.4 is the VinBigData "
             "competition's IoU threshold with COCO's 101-point interpolation. Per-class tables: "
             "`runs/<run>/eval/per_class.csv`.", ""]
    for file_name, (title, _) in charts.items():
        lines += [f"### {title}", "", f"![{title}](charts/{file_name})", ""]
    pictures = [f"runs/{init}{main}/eval/visualize/contact_sheet.png" for init in ("ssl", "random")]
    existing = [p for p in pictures if (folder.out / p).is_file()]
    if existing:
        lines += ["## Pictures", "", "Ground truth: solid boxes, name above. Predictions with score >= 0.3: dashed, "
                  "name and score inside. One PNG per image next to each contact sheet.", ""]
        lines += [f"**{Path(p).parts[1]}**\n\n![{Path(p).parts[1]}]({p})\n" for p in existing]
    lines += ["## Time per stage", "", *_timing_section(folder), "",
              "## Commands", "", "Each stage ran this command from the repository root (logs in `logs/`):", "",
              "```"]
    lines += [f"# {name}\n{entry.get('command', '')}" for name, entry in folder.record["stages"].items()]
    lines += ["```", ""]
    path = folder.out / "report.md"
    atomic_write_text(path, "\n".join(lines))
    return path
