"""Evaluation of cxr models.

    python evaluate.py --mode probe --data-dir data --experiment-name simclr_40pct
    python evaluate.py --mode probe --data-dir data --experiment-name simclr_40pct --backbone random

--mode probe gauges a backbone with a linear probe: pooled features of the
prepared train and test images (frozen, eval mode, no augmentation),
standardized with the train statistics, one-vs-rest L2 logistic regression
(C=1.0, as scikit-learn's default) on the 14 image-level labels, and
macro-AUROC on the test split. The default backbone is the experiment's
pretrain/pretrained-backbone.pth, whose JSON gives the architecture and image
size; --backbone random gives the baseline of a randomly initialized trunk of
the same architecture. Results go to <output-dir>/<experiment>/eval/probe-<name>.json.
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from cxr.backbone import build_resnet, pretrained_trunk
from cxr.classes import CLASS_NAMES
from cxr.data import image_labels, split_images
from cxr.errors import UserError, exit_on_user_error
from cxr.outputs import atomic_write_json, refuse_existing
from cxr.probe import extract_features, fit_logistic_ovr, macro_auroc, standardize


def get_args_parser():
    p = argparse.ArgumentParser(description="Evaluate cxr models.")
    p.add_argument("--mode", required=True, choices=["probe"])
    p.add_argument("--data-dir", default="data", help="folder written by python -m cxr.prepare")
    p.add_argument("--output-dir", default="vinbig_output")
    p.add_argument("--experiment-name", default="simclr")
    p.add_argument("--backbone", default=None,
                   help="'random', or a ResNet state dict (default: the experiment's pretrained-backbone.pth)")
    p.add_argument("--arch", default=None, help="default: from the backbone's JSON, else resnet50")
    p.add_argument("--image-size", type=int, default=None, help="default: from the backbone's JSON, else 512")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--C", type=float, default=1.0, help="inverse L2 strength of the logistic regression")
    p.add_argument("--seed", type=int, default=0, help="seed of the random backbone")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available)")
    p.add_argument("--replace", action="store_true", help="overwrite an existing result file")
    return p


def resolve_backbone(args, experiment_dir):
    """(name, trunk, arch, image_size, message) for the probe's backbone."""
    default = experiment_dir / "pretrain" / "pretrained-backbone.pth"
    path = default if args.backbone in (None, "ssl") else Path(args.backbone)
    meta_path = default.with_suffix(".json") if args.backbone == "random" else path.with_suffix(".json")
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    arch = args.arch or meta.get("arch", "resnet50")
    image_size = args.image_size or meta.get("image_size", 512)
    if args.backbone == "random":
        torch.manual_seed(args.seed)
        trunk = build_resnet(arch)
        trunk.fc = torch.nn.Identity()
        return "random", trunk, arch, image_size, f"random {arch} (seed {args.seed})"
    if not path.is_file():
        raise UserError(f"backbone {path} not found; train it with train_ssl.py "
                        f"--experiment-name {args.experiment_name}, or pass --backbone PATH|random")
    trunk, message = pretrained_trunk(arch, path)
    return ("ssl" if path == default else path.stem), trunk, arch, image_size, message


def run_probe(args):
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    experiment_dir = Path(args.output_dir) / args.experiment_name
    name, trunk, arch, image_size, message = resolve_backbone(args, experiment_dir)
    out = experiment_dir / "eval" / f"probe-{name}.json"
    refuse_existing(out, args.replace)
    print(message)
    start = time.perf_counter()
    splits = {}
    for split in ("train", "test"):
        paths, labels = split_images(args.data_dir, split), image_labels(args.data_dir, split)
        names = sorted(paths)
        features = extract_features(trunk, [paths[n] for n in names], image_size, args.batch_size, device,
                                    args.workers)
        splits[split] = (features, torch.tensor(np.stack([labels[n] for n in names])))
        print(f"{split}: {len(names)} images -> features {tuple(features.shape)}")
    (train_x, train_y), (test_x, test_y) = splits["train"], splits["test"]
    train_x, test_x = standardize(train_x, test_x)
    weights, bias = fit_logistic_ovr(train_x, train_y, C=args.C)
    macro, per_class = macro_auroc(test_x.double() @ weights + bias, test_y)
    rows = [{"class_id": k, "class_name": CLASS_NAMES[k], "auroc": per_class[k],
             "train_positives": int(train_y[:, k].sum()), "test_positives": int(test_y[:, k].sum())}
            for k in range(len(CLASS_NAMES))]
    print(f"{'class':<20} {'train+':>6} {'test+':>6} {'AUROC':>7}")
    for row in rows:
        auroc = "n/a" if row["auroc"] is None else f"{row['auroc']:.4f}"
        print(f"{row['class_name']:<20} {row['train_positives']:>6} {row['test_positives']:>6} {auroc:>7}")
    excluded = [r["class_name"] for r in rows if r["auroc"] is None]
    print(f"macro-AUROC {macro:.4f} over {len(rows) - len(excluded)} classes"
          + (f" (undefined, left out: {', '.join(excluded)})" if excluded else "") + f" [{name}: {message}]")
    result = {"backbone": name, "source": message, "arch": arch, "image_size": image_size, "C": args.C,
              "macro_auroc": macro, "per_class": rows, "excluded_classes": excluded,
              "train_images": len(train_y), "test_images": len(test_y),
              "seconds": round(time.perf_counter() - start, 1)}
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out, result, indent=1)
    print(f"wrote {out}")
    return result


def main(argv=None):
    args = get_args_parser().parse_args(argv)
    return run_probe(args)


if __name__ == "__main__":
    exit_on_user_error(main)
