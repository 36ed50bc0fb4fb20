"""Benchmark: the whole `python -m cxr.prepare` command vs ensemble-boxes' fusion alone.

Builds a table the size of the real one (15,000 images, 4,394 with findings,
three readers each, about 68k rows) with the synthetic generator's planner,
and a real 512 x 512 PNG hard-linked under every image id. Then:

1. times the whole command (process start, CSV, PNG headers, fusion, links,
   JSON), best of --repeats runs, and once with --verify-pixels, which decodes
   every image instead of checking its PNG header and end chunk;
2. if ensemble-boxes is installed (requirements-bench.txt), times the fusion
   the way a user of that package writes it: pandas groupby per image, per
   image one `weighted_boxes_fusion` call with each class's boxes as one
   model, iou_thr 0.2, skip_box_thr 1e-4;
3. prints the time ratio and the share of images whose fused boxes agree
   with ours to 0.1 px.

    python bench/bench_prepare.py [--work DIR] [--repeats 3]
"""

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cxr.data.synthetic_xrays import REAL_IMAGES, plan_dataset, write_csv  # noqa: E402

PNG_SIZE = 512


def build_table(root):
    plans = plan_dataset(REAL_IMAGES, seed=0)
    num_rows = write_csv(root / "train.csv", plans, seed=0)
    (root / "train").mkdir()
    template = root / "template.png"
    noise = (
        np.random.default_rng(0).normal(128, 40, (PNG_SIZE, PNG_SIZE)).clip(0, 255).astype(np.uint8)
    )
    Image.fromarray(noise).filter(ImageFilter.GaussianBlur(2)).save(template)
    for plan in plans:
        (root / "train" / f"{plan.image_id}.png").hardlink_to(template)
    return num_rows, sum(bool(p.lesions) for p in plans)


def time_prepare(root, repeats, *flags, name="data"):
    """Best wall time of `repeats` runs, each into a fresh folder; the last is root/name."""
    times = []
    for run in range(repeats):
        out = root / (name if run == repeats - 1 else f"{name}{run}")
        start = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "cxr.prepare",
                "--csv",
                str(root / "train.csv"),
                "--images",
                str(root / "train"),
                "--out",
                str(out),
                *flags,
            ],
            check=True,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
        )
        times.append(time.perf_counter() - start)
    return min(times)


def our_fusion(root, repeats):
    """Best in-process time of prepare's fusion phase (`annotate`: WBF of every image
    and class, and the rescale to each PNG), the part the peer's loop does."""
    from cxr.data.preparation import Settings, annotate, read_table, select_images

    settings = Settings()
    table = read_table(root / "train.csv", settings)
    images = select_images(table, root / "train", settings, log=lambda *_: None)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        annotate(table, images.sizes, iou_thr=settings.iou_thr, skip_box_thr=settings.skip_box_thr)
        times.append(time.perf_counter() - start)
    return min(times)


def peer_fusion(csv_path):
    """What a user of ensemble-boxes writes (the popular VinBigData notebook)."""
    import pandas as pd
    from ensemble_boxes import weighted_boxes_fusion

    table = pd.read_csv(csv_path)
    findings = table[table.class_id != 14]
    start = time.perf_counter()
    fused = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for image_id, rows in findings.groupby("image_id"):
            width, height = rows.width.iloc[0], rows.height.iloc[0]
            boxes_list, scores_list, labels_list = [], [], []
            for class_id in rows.class_id.unique():
                cls = rows[rows.class_id == class_id]
                boxes = cls[["x_min", "y_min", "x_max", "y_max"]].to_numpy() / [
                    width,
                    height,
                    width,
                    height,
                ]
                boxes_list.append(boxes.tolist())
                scores_list.append([1.0] * len(cls))
                labels_list.append([class_id] * len(cls))
            boxes, _, labels = weighted_boxes_fusion(
                boxes_list, scores_list, labels_list, iou_thr=0.2, skip_box_thr=1e-4
            )
            fused[image_id] = (labels.astype(int), boxes * PNG_SIZE)
    return time.perf_counter() - start, fused


def our_boxes(data_dir):
    import json

    ours = defaultdict(list)
    for split in ("train", "test"):
        coco = json.loads((data_dir / f"{split}_annotations.json").read_text())
        names = {img["id"]: Path(img["file_name"]).stem for img in coco["images"]}
        for ann in coco["annotations"]:
            x, y, w, h = ann["bbox"]
            ours[names[ann["image_id"]]].append((ann["category_id"] - 1, [x, y, x + w, y + h]))
    return ours


def agreement(peer, ours, tolerance=0.1):
    def canonical(pairs):
        return sorted((int(c), *np.round(b, 3)) for c, b in pairs)

    agree = 0
    for image_id, (labels, boxes) in peer.items():
        a, b = canonical(zip(labels, boxes)), canonical(ours.get(image_id, []))
        agree += len(a) == len(b) and all(
            x[0] == y[0] and np.abs(np.subtract(x[1:], y[1:])).max() <= tolerance
            for x, y in zip(a, b)
        )
    return agree / len(peer)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", help="folder for the table (default: a temporary one)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        num_rows, num_findings = build_table(root)
        print(
            f"table: {REAL_IMAGES} images, {num_findings} with findings, {num_rows} rows, "
            f"{PNG_SIZE} px PNGs (built in {time.perf_counter() - start:.1f} s)"
        )
        ours_s = time_prepare(root, args.repeats)
        print(f"cxr.prepare, whole command (best of {args.repeats}): {ours_s:.3f} s")
        decoding_s = time_prepare(root, 1, "--verify-pixels", name="data_decoded")
        print(f"cxr.prepare --verify-pixels (every image decoded), one run: {decoding_s:.3f} s")
        if importlib.util.find_spec("ensemble_boxes") is None:
            print(
                "ensemble-boxes not installed: pip install -r requirements-bench.txt for the "
                "comparison"
            )
            return
        fusion_s = our_fusion(root, args.repeats)
        print(
            f"cxr.prepare's fusion phase alone, in process (best of {args.repeats}): "
            f"{fusion_s:.3f} s"
        )
        peer_s, peer = peer_fusion(root / "train.csv")
        share = agreement(peer, our_boxes(root / "data"))
        print(
            "ensemble-boxes 1.0.9 fusion alone (pandas groupby + one call per image): "
            f"{peer_s:.3f} s"
        )
        print(
            "| whole cxr.prepare | its fusion alone | peer fusion alone | ratio, whole | "
            "ratio, fusion | images agreeing to 0.1 px |"
        )
        print(
            f"| {ours_s:.2f} s | {fusion_s:.2f} s | {peer_s:.2f} s | {peer_s / ours_s:.1f}x | "
            f"{peer_s / fusion_s:.1f}x | {share:.2%} of {len(peer)} |"
        )


if __name__ == "__main__":
    main()
