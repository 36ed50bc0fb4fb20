"""Evaluation of cxr models: mAP, pictures, predictions, and the linear probe.

    python evaluate.py --mode map --data-dir data --experiment-name simclr_40pct
    python evaluate.py --mode visualize --data-dir data --experiment-name simclr_40pct
    python evaluate.py --mode predict --experiment-name simclr_40pct --images DIR --submission ...
    python evaluate.py --mode probe --data-dir data --experiment-name simclr_40pct

map: pycocotools' 12 numbers, AP@0.4, a per-class table and the
competition's metric (`cxr.evaluation.coco_metrics`), every test image inferred once
across ranks; visualize: ground truth and predictions drawn; predict:
detections of unlabeled images, with --submission the competition's CSV
(`cxr.evaluation.submission`); probe: a linear probe of a backbone (`cxr.evaluation.probe`) or of a
random one (--backbone random). Results go to the experiment's eval/
(cxr.run.layout); an existing result is refused unless --replace.
"""

import argparse
import contextlib
import csv
import io
import time
from pathlib import Path

import numpy as np
import torch

from cxr.data.classes import VINBIGDATA_CLASSES, class_index, dataset_classes
from cxr.data.datasets import DetectionDataset, ImageList, xyxy
from cxr.data.image_files import image_size
from cxr.data.images import list_images, open_grayscale
from cxr.data.names import check_name
from cxr.data.original_sizes import read_original_sizes
from cxr.data.prepared import (
    check_images_exist,
    image_labels,
    load_coco,
    read_classes,
    split_images,
)
from cxr.detection.detector import detection_collate, predict
from cxr.evaluation.coco_metrics import (
    STAT_NAMES,
    coco_ground_truth,
    coco_metrics,
    competition_metrics,
    format_metric,
)
from cxr.evaluation.pictures import contact_sheet, draw_detections
from cxr.evaluation.probe import extract_features, macro_auroc, probe_test_scores
from cxr.evaluation.submission import prediction_string, submission_csv
from cxr.nn.resnet import FEATURE_DIMS, headless_resnet
from cxr.nn.seeds import stream_seed
from cxr.run import cli, layout
from cxr.run.distributed import agree, gather_to_main, inference_shard, process_group
from cxr.run.errors import UserError, exit_on_user_error
from cxr.run.model_files import backbone_meta, load_detector, pretrained_trunk
from cxr.run.outputs import (
    check_output_folder,
    open_output_folder,
    refuse_existing,
    staged_directory,
)
from cxr.run.progress import progress
from cxr.run.provenance import check_unlearnt


def get_args_parser():
    p = cli.command_parser(
        "evaluate.py", "Evaluate cxr models (torchrun-able for map and predict)."
    )
    p.add_argument(
        "--mode",
        required=True,
        choices=["map", "visualize", "predict", "probe"],
        help="map: COCO mAP on test images; visualize: pictures; predict: unlabeled images; "
        "probe: linear probe of a backbone",
    )
    cli.add_folder_flags(p, experiment_help="the experiment folder: its models and eval/")
    p.add_argument(
        "--batch-size",
        type=cli.positive_int,
        default=None,
        help="images per forward pass (default: 8 for map, 32 for probe)",
    )
    cli.add_device_flags(p)
    p.add_argument("--replace", action="store_true", help="overwrite existing results")
    detector = p.add_argument_group("map, visualize, predict")
    detector.add_argument(
        "--checkpoint",
        default="fasterrcnn_final.pth",
        help="detector weights; a bare file name is looked up in the experiment folder",
    )
    detector.add_argument(
        "--eval-dir", default=None, help="where results go (default: the experiment's eval/)"
    )
    detector.add_argument(
        "--score-threshold",
        type=cli.fraction,
        default=None,
        help="lowest detection score kept (map, predict: 0.05, torchvision's default) "
        "or drawn (visualize: 0.3)",
    )
    detector.add_argument(
        "--num-images", type=cli.positive_int, default=8, help="visualize: how many test images"
    )
    detector.add_argument(
        "--pictures",
        type=cli.non_negative_int,
        default=0,
        help="map: also draw this many test images from its predictions (as visualize)",
    )
    detector.add_argument(
        "--image-ids",
        default=None,
        help="visualize: comma-separated image ids (default: a seeded sample of --num-images)",
    )
    detector.add_argument(
        "--images", nargs="+", default=None, help="predict: image folders or files"
    )
    detector.add_argument(
        "--original-sizes",
        default=None,
        help="predict: CSV image_id,width,height (or dim0,dim1) or a prepare COCO JSON, "
        "to write submission boxes in original pixels (default: none; --submission then "
        "needs --png-pixels)",
    )
    detector.add_argument(
        "--submission", action="store_true", help="predict: also write submission.csv"
    )
    detector.add_argument(
        "--png-pixels",
        action="store_true",
        help="predict --submission without --original-sizes: write boxes in the PNGs' pixels "
        "(the competition scores original DICOM pixels)",
    )
    probe_flags = p.add_argument_group("probe")
    probe_flags.add_argument(
        "--backbone",
        default=None,
        help="'random', or a ResNet state dict (default: the experiment's pretrained-backbone.pth)",
    )
    probe_flags.add_argument(
        "--arch",
        default=None,
        choices=sorted(FEATURE_DIMS),
        help="default: from the backbone's JSON, else resnet50",
    )
    probe_flags.add_argument(
        "--image-size",
        type=cli.image_size,
        default=None,
        help="default: from the backbone's JSON, else 512",
    )
    probe_flags.add_argument(
        "--C",
        type=cli.positive_float,
        default=1.0,
        help="inverse L2 strength of the logistic regression",
    )
    p.add_argument(
        "--seed",
        type=cli.seed,
        default=0,
        help="seed of the random backbone and of the pictured images",
    )
    seed_project = cli.seed_project_group(p)
    seed_project.add_argument(
        "--test-data-dir", default=None, help="image folder (default: DATA_DIR/test)"
    )
    seed_project.add_argument(
        "--test-ann-file",
        default=None,
        help="COCO annotations of those images (default: DATA_DIR/test_annotations.json)",
    )
    return p


def resolve_checkpoint(args, experiment_dir):
    path = Path(args.checkpoint)
    if path.parent == Path(".") and not path.is_file():
        path = experiment_dir / path
    if not path.is_file():
        raise UserError(
            f"--checkpoint {path} not found; train it with train_det.py --experiment-name "
            f"{args.experiment_name}, or pass the path of a detector"
        )
    return path


def labeled_test_set(args, classes, scored=False):
    """(COCO dict, image folder, annotation file) of the evaluation images, checked
    against the detector's classes; scored: there must be boxes to score."""
    image_dir = Path(args.test_data_dir or Path(args.data_dir) / "test")
    ann_file = Path(args.test_ann_file or Path(args.data_dir) / "test_annotations.json")
    coco = load_coco(ann_file)
    if not coco.get("images"):
        raise UserError(f"{ann_file} holds no test images: there is nothing to evaluate")
    if scored and not coco.get("annotations"):
        raise UserError(
            f"{ann_file}: its {len(coco['images'])} images hold no box, so mAP is undefined"
        )
    for number, image in enumerate(coco["images"]):
        check_name(str(image.get("file_name", "")), f"{ann_file}, images[{number}]")
    theirs = dataset_classes(coco, ann_file)
    if theirs != tuple(classes):
        raise UserError(
            f"{ann_file}: its classes {list(theirs)[:4]}... are not the detector's "
            f"{list(classes)[:4]}... (category ids 1..{len(classes)} in that order)"
        )
    check_images_exist(coco, image_dir, ann_file)
    return coco, image_dir, ann_file


def detector_for(args, dist_info, experiment_dir, score_threshold):
    """(model on the device, metadata, checkpoint path); the model keeps detections
    >= score_threshold."""
    checkpoint = resolve_checkpoint(args, experiment_dir)
    model, meta = load_detector(checkpoint)
    model.roi_heads.score_thresh = score_threshold
    if dist_info.is_main:
        print(f"detector {checkpoint}: {meta['arch']}-FPN at {meta['image_size']} px")
    return model.to(dist_info.device), meta, checkpoint


def predict_all(model, dataset, args, dist_info):
    """COCO results of every image of dataset, gathered on rank 0 (None elsewhere)."""
    shard = torch.utils.data.Subset(dataset, inference_shard(len(dataset), dist_info))
    loader = torch.utils.data.DataLoader(
        shard,
        batch_size=args.batch_size or 8,
        num_workers=args.workers,
        collate_fn=detection_collate,
    )
    batches = progress(loader, "inference", log=print if dist_info.is_main else None)
    return gather_to_main(predict(model, batches, device=dist_info.device), dist_info)


def per_class_rows(metrics, classes):
    return [
        {
            "class_id": class_index(row["category_id"]),
            "class_name": classes[class_index(row["category_id"])],
            "gt_boxes": row["gt_boxes"],
            "AP": row["AP"],
            "AP50": row["AP50"],
            "AP40": row["AP40"],
        }
        for row in metrics["per_class"]
    ]


def metrics_tables(metrics, classes):
    """The summary and per-class tables as aligned text."""
    lines = [f"{'metric':<10} {'value':>7}"]
    lines += [f"{name:<10} {format_metric(metrics[name]):>7}" for name in (*STAT_NAMES, "AP40")]
    lines.append("")
    width = max(20, *(len(name) for name in classes))
    lines.append(f"{'class':<{width}} {'gt boxes':>8} {'AP':>7} {'AP50':>7} {'AP@0.4':>7}")
    for row in per_class_rows(metrics, classes):
        lines.append(
            f"{row['class_name']:<{width}} {row['gt_boxes']:>8} {format_metric(row['AP']):>7} "
            f"{format_metric(row['AP50']):>7} {format_metric(row['AP40']):>7}"
        )
    return "\n".join(lines)


def per_class_csv(metrics, classes):
    buffer = io.StringIO()
    writer = csv.DictWriter(
        buffer,
        fieldnames=["class_id", "class_name", "gt_boxes", "AP", "AP50", "AP40"],
        lineterminator="\n",
    )
    writer.writeheader()
    for row in per_class_rows(metrics, classes):
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return buffer.getvalue()


@contextlib.contextmanager
def results_folder(eval_dir, results, args, dist_info):
    """The eval folder (`cxr.run.outputs`: cxr's, locked for the block) on the main process,
    refusing existing `results` unless --replace; None on the other processes."""
    with contextlib.ExitStack() as stack:

        def open_on_main():
            data = None if args.mode == "predict" else args.data_dir
            inputs = [data, getattr(args, "test_data_dir", None), *(args.images or [])]
            folder = stack.enter_context(
                open_output_folder(eval_dir, command="evaluate.py", inputs=inputs)
            )
            for name in results:
                refuse_existing(folder.inside(name), args.replace)
            return folder

        yield agree(dist_info, open_on_main)


def run_map(args, dist_info):
    experiment_dir = Path(args.output_dir) / args.experiment_name
    eval_dir = Path(args.eval_dir or experiment_dir / layout.EVAL)
    threshold = 0.05 if args.score_threshold is None else args.score_threshold
    model, meta, checkpoint = detector_for(args, dist_info, experiment_dir, threshold)
    coco, image_dir, ann_file = labeled_test_set(args, meta["classes"], scored=True)
    dataset = DetectionDataset(coco, image_dir)  # each image's size, from its header
    log = print if dist_info.is_main else None
    images = {Path(i["file_name"]).stem: image_dir / i["file_name"] for i in coco["images"]}
    role = f"test images of {ann_file}"
    checked = check_unlearnt(
        meta,
        images,
        model=f"the detector {checkpoint}",
        role=role,
        log=log,
        dist_info=dist_info,
        workers=args.workers,
    )
    if log:
        log(checked)
    with results_folder(eval_dir, [layout.METRICS], args, dist_info) as folder:
        start = time.perf_counter()
        results = predict_all(model, dataset, args, dist_info)
        if dist_info.is_main:
            run = {
                "checkpoint": str(checkpoint),
                "annotation_file": str(ann_file),
                "image_dir": str(image_dir),
                "score_threshold": threshold,
                "world_size": dist_info.world_size,
                "seconds": round(time.perf_counter() - start, 1),
                "provenance": checked,
            }
            summary = write_map(folder, coco=coco, results=results, meta=meta, run=run)
            if args.pictures:
                pictures = argparse.Namespace(**{**vars(args), "num_images": args.pictures})
                chosen = choose_pictured(coco, pictures)
                out = eval_dir / layout.PICTURES
                draw_pictures(chosen, coco, image_dir, results, meta["classes"], out, args)
            return summary
    return None


def write_map(folder, *, coco, results, meta, run):
    """Score the results, print the tables, write metrics.json, per_class.csv and the
    predictions; returns the summary."""
    metrics = coco_metrics(coco_ground_truth(coco), results)
    competition = None
    if tuple(meta["classes"]) == VINBIGDATA_CLASSES:  # the competition's metric, its data only
        competition = competition_summary(coco, competition_metrics(coco, results))
    summary = {
        "arch": meta["arch"],
        "image_size": meta["image_size"],
        "test_images": len(coco["images"]),
        "test_boxes": len(coco["annotations"]),
        **run,
        **metrics,
        "competition": competition,
    }
    print(metrics_tables(metrics, meta["classes"]))
    if competition:
        print_competition(competition)
    folder.write_json(layout.TEST_PREDICTIONS, results)
    folder.write_text(layout.PER_CLASS, per_class_csv(metrics, meta["classes"]))
    folder.write_json(layout.METRICS, summary, indent=1)
    print(f"wrote {folder.inside(layout.METRICS)}, {layout.PER_CLASS}, {layout.TEST_PREDICTIONS}")
    return summary


def competition_summary(coco, competition):
    normal_films = len(coco["images"]) - len({a["image_id"] for a in coco["annotations"]})
    return {
        "mAP40": competition["mAP40"],
        "no_finding_AP40": competition["per_class"][len(VINBIGDATA_CLASSES) + 1],
        "test_images_without_boxes": normal_films,
    }


def print_competition(competition):
    normal_films = competition["test_images_without_boxes"]
    print(
        "AP40 is AP at IoU 0.4 (the VinBigData competition's threshold) with COCO's 101-point "
        "interpolation"
    )
    print(
        "competition mAP@0.4 (VOC matching and all-point interpolation, lesions + 'No finding' "
        f"scored 1 - the top lesion score): {format_metric(competition['mAP40'])}; 'No finding' "
        f"AP {format_metric(competition['no_finding_AP40'])} on {normal_films} test images "
        "without boxes" + ("" if normal_films else " (prepare --normal-in-test adds normal films)")
    )


def _detections_by_image(results):
    by_image = {}
    for r in results:
        by_image.setdefault(r["image_id"], []).append(
            (r["category_id"], r["score"], xyxy(r["bbox"]))
        )
    return by_image


def choose_pictured(coco, args):
    """The COCO images to draw: --image-ids, else a seeded sample of --num-images."""
    by_name = {Path(i["file_name"]).stem: i for i in coco["images"]}
    if args.image_ids:
        wanted = [name.strip() for name in args.image_ids.split(",") if name.strip()]
        unknown = [name for name in wanted if name not in by_name]
        if unknown:
            raise UserError(f"--image-ids: {', '.join(unknown[:3])} not in the test annotations")
        return [by_name[name] for name in wanted]
    rng = np.random.default_rng(stream_seed("pictures", seed=args.seed))
    order = rng.permutation(len(coco["images"]))[: args.num_images]
    return [coco["images"][i] for i in sorted(order)]


def run_visualize(args, dist_info):
    experiment_dir = Path(args.output_dir) / args.experiment_name
    out = Path(args.eval_dir or experiment_dir / layout.EVAL) / layout.PICTURES
    check_output_folder(out, args.replace)
    threshold = 0.3 if args.score_threshold is None else args.score_threshold
    model, meta, _ = detector_for(args, dist_info, experiment_dir, threshold)
    coco, image_dir, _ = labeled_test_set(args, meta["classes"])
    chosen = choose_pictured(coco, args)
    ids = {i["id"] for i in chosen}
    subset = {
        **coco,
        "images": chosen,
        "annotations": [a for a in coco["annotations"] if a["image_id"] in ids],
    }
    results = predict_all(model, DetectionDataset(subset, image_dir), args, dist_info)
    if dist_info.is_main:
        return draw_pictures(chosen, subset, image_dir, results, meta["classes"], out, args)
    return None


def draw_pictures(chosen, coco, image_dir, results, classes, out, args):
    """One picture of each chosen image (ground truth solid, predictions with a score
    of at least 0.3 or --score-threshold dashed) and a contact sheet, in `out`."""
    threshold = 0.3 if args.mode == "map" or args.score_threshold is None else args.score_threshold
    detections, truth = _detections_by_image(results), {}
    for a in coco["annotations"]:
        truth.setdefault(a["image_id"], []).append((a["category_id"], xyxy(a["bbox"])))
    pictures, captions = [], []
    with staged_directory(out, args.replace, command="evaluate.py") as staging:
        for image in chosen:
            picture = draw_detections(
                open_grayscale(image_dir / image["file_name"]),
                ground_truth=truth.get(image["id"], []),
                predictions=detections.get(image["id"], []),
                classes=classes,
                score_threshold=threshold,
            )
            name = Path(image["file_name"]).stem
            picture.save(staging / f"{name}.png")
            pictures.append(picture)
            shown = sum(score >= threshold for _, score, _ in detections.get(image["id"], []))
            captions.append(f"{name[:12]}  gt {len(truth.get(image['id'], []))}  pred {shown}")
        contact_sheet(pictures, captions).save(staging / layout.CONTACT_SHEET)
    print(f"wrote {len(chosen)} pictures and {layout.CONTACT_SHEET} to {out}")
    return out


def run_predict(args, dist_info):
    if not args.images:
        raise UserError("--mode predict needs --images DIR_OR_FILES")
    if args.submission and not args.original_sizes and not args.png_pixels:
        raise UserError(
            "--submission without --original-sizes would write boxes in PNG pixels, which the "
            "competition scores against the original DICOM sizes; pass --original-sizes "
            "(e.g. the 512 px download's test_meta.csv), or --png-pixels if PNG pixels are wanted"
        )
    experiment_dir = Path(args.output_dir) / args.experiment_name
    eval_dir = Path(args.eval_dir or experiment_dir / layout.EVAL)
    files = list_images(args.images, "--images")
    refuse_shared_names(files)
    sizes = read_original_sizes(args.original_sizes) if args.original_sizes else None
    missing = [f.stem for f in files if sizes is not None and f.stem not in sizes]
    if missing:
        raise UserError(
            f"--original-sizes {args.original_sizes}: no size for {len(missing)} images "
            f"(e.g. {missing[0]})"
        )
    threshold = 0.05 if args.score_threshold is None else args.score_threshold
    model, meta, _ = detector_for(args, dist_info, experiment_dir, threshold)
    unlabeled = {
        "images": [{"id": i, "file_name": str(f)} for i, f in enumerate(files)],
        "annotations": [],
    }
    with results_folder(eval_dir, ["predictions.json"], args, dist_info) as folder:
        results = predict_all(model, DetectionDataset(unlabeled, ""), args, dist_info)
        if dist_info.is_main:
            write_predictions(
                folder,
                files,
                results,
                sizes=sizes,
                threshold=threshold,
                submission=args.submission,
                classes=meta["classes"],
            )
            return results
    return None


def refuse_shared_names(files):
    """An image is named by its file name without suffix (a submission's image_id, an
    --original-sizes row): two files of one name from two folders are refused."""
    first = {}
    for path in files:
        if path.stem in first:
            raise UserError(
                f"--images: {first[path.stem]} and {path} share the name {path.stem}, which "
                "names an image in a submission and in --original-sizes; pass one of them"
            )
        first[path.stem] = path


def write_predictions(folder, files, results, *, sizes, threshold, submission, classes):
    """predictions.json (COCO results naming their files) and, with --submission, the
    competition's submission.csv ("No finding" is class len(classes))."""
    results[:] = [{**r, "file_name": files[r["image_id"]].name} for r in results]
    folder.write_json("predictions.json", results)
    print(
        f"wrote {len(results)} detections (score >= {threshold:g}) on {len(files)} images to "
        f"{folder.inside('predictions.json')}"
    )
    if submission:
        rows = submission_rows(files, results, sizes, threshold, no_finding=len(classes))
        folder.write_text("submission.csv", submission_csv(rows))
        pixels = "original pixels" if sizes else "PNG pixels: pass --original-sizes for them"
        print(f"wrote {folder.inside('submission.csv')} (boxes in {pixels})")


def submission_rows(files, results, sizes, threshold, *, no_finding):
    """(image_id, PredictionString) of every file, boxes scaled to the original sizes."""
    detections, rows = _detections_by_image(results), []
    for i, f in enumerate(files):
        width, height = image_size(f)
        original = sizes[f.stem] if sizes else (width, height)
        scale = (original[0] / width, original[1] / height)
        string = prediction_string(
            detections.get(i, []), no_finding=no_finding, scale=scale, score_threshold=threshold
        )
        rows.append((f.stem, string))
    return rows


def resolve_backbone(args, experiment_dir):
    """(name, trunk, arch, image_size, message) for the probe's backbone, refused if it
    learnt from a test image (`cxr.run.provenance`)."""
    default = experiment_dir / layout.PRETRAIN / layout.BACKBONE
    path = default if args.backbone in (None, "ssl") else Path(args.backbone)
    meta = backbone_meta(default if args.backbone == "random" else path)
    arch = args.arch or meta.get("arch", "resnet50")
    size = args.image_size or meta.get("image_size", 512)
    if args.backbone == "random":
        torch.manual_seed(stream_seed("weights", seed=args.seed))
        message = f"random {arch} (seed {args.seed})"
        return f"random-seed{args.seed}", headless_resnet(arch), arch, size, message
    if not path.is_file():
        raise UserError(
            f"backbone {path} not found; train it with train_ssl.py "
            f"--experiment-name {args.experiment_name}, or pass --backbone PATH|random"
        )
    trunk, message = pretrained_trunk(arch, path)
    test = split_images(args.data_dir, "test")
    role = f"test images of {args.data_dir}"
    model = f"the backbone {path}"
    checked = check_unlearnt(meta, test, model=model, role=role, log=print, workers=args.workers)
    name = "ssl" if path == default else path.stem
    return name, trunk, arch, size, f"{message}; {checked}"


def run_probe(args, dist_info):
    experiment_dir = Path(args.output_dir) / args.experiment_name
    name, trunk, arch, size, message = resolve_backbone(args, experiment_dir)
    classes = read_classes(args.data_dir)
    result_file = layout.probe_file(name)
    with results_folder(experiment_dir / layout.EVAL, [result_file], args, dist_info) as folder:
        print(message)
        result = {"backbone": name, "source": message, "arch": arch, "image_size": size}
        result.update(probe_figures(trunk, classes, args=args, size=size, device=dist_info.device))
        excluded = print_probe(result["per_class"], result["macro_auroc"], name, message)
        folder.write_json(result_file, {**result, "excluded_classes": excluded}, indent=1)
        print(f"wrote {folder.inside(result_file)}")
    return {**result, "excluded_classes": excluded}


def probe_figures(trunk, classes, *, args, size, device):
    """The linear probe's figures: features of the prepared train and test images,
    logistic regression on the train ones, AUROC per class on the test ones."""
    test_labels = np.array(list(image_labels(args.data_dir, "test").values()))
    positives = test_labels.sum(axis=0)
    if not ((positives > 0) & (positives < len(test_labels))).any():
        raise UserError(
            f"{args.data_dir}: no class has both test images with it and without it, so no "
            "AUROC is defined; the probe needs a larger test split (prepare --test-fraction)"
        )
    start = time.perf_counter()
    splits = {}
    for split in ("train", "test"):
        splits[split] = split_features(
            trunk, args.data_dir, split, size=size, args=args, device=device
        )
        print(
            f"{split}: {len(splits[split][1])} images -> features {tuple(splits[split][0].shape)}"
        )
    (train_x, train_y), (test_x, test_y) = splits["train"], splits["test"]
    macro, per_class = macro_auroc(probe_test_scores(train_x, train_y, test_x, C=args.C), test_y)
    rows = [
        {
            "class_id": k,
            "class_name": class_name,
            "auroc": per_class[k],
            "train_positives": int(train_y[:, k].sum()),
            "test_positives": int(test_y[:, k].sum()),
        }
        for k, class_name in enumerate(classes)
    ]
    return {
        "C": args.C,
        "macro_auroc": macro,
        "per_class": rows,
        "train_images": len(train_y),
        "test_images": len(test_y),
        "seconds": round(time.perf_counter() - start, 1),
    }


def split_features(trunk, data_dir, split, *, size, args, device):
    """(features (n, d), image-level labels (n, K)) of a prepared split's images in
    name order: what the probe is fitted and scored on."""
    paths, labels = split_images(data_dir, split), image_labels(data_dir, split)
    names = sorted(paths)
    loader = torch.utils.data.DataLoader(
        ImageList([paths[n] for n in names], size),
        batch_size=args.batch_size or 32,
        num_workers=args.workers,
    )
    features = extract_features(trunk, progress(loader, "features"), device=device)
    return features, torch.tensor(np.stack([labels[n] for n in names]))


def print_probe(rows, macro, name, message):
    """The per-class table and the macro-AUROC line; returns the classes left out."""
    width = max(20, *(len(row["class_name"]) for row in rows))
    print(f"{'class':<{width}} {'train+':>6} {'test+':>6} {'AUROC':>7}")
    for row in rows:
        auroc = "n/a" if row["auroc"] is None else f"{row['auroc']:.4f}"
        print(
            f"{row['class_name']:<{width}} {row['train_positives']:>6} {row['test_positives']:>6} "
            f"{auroc:>7}"
        )
    excluded = [r["class_name"] for r in rows if r["auroc"] is None]
    print(
        f"macro-AUROC {format_metric(macro)} over {len(rows) - len(excluded)} classes"
        + (f" (undefined, left out: {', '.join(excluded)})" if excluded else "")
        + f" [{name}: {message}]"
    )
    return excluded


MODES = {"map": run_map, "visualize": run_visualize, "predict": run_predict, "probe": run_probe}


def main(argv=None):
    args = get_args_parser().parse_args(argv)
    with process_group(args.device) as dist_info:
        if args.mode == "probe" and dist_info.world_size > 1:
            raise UserError("--mode probe runs in one process; launch it with python, not torchrun")
        return MODES[args.mode](args, dist_info)


if __name__ == "__main__":
    exit_on_user_error(main)
