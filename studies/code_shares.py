"""How the product's lines divide between the method, the model's loop, the evaluation, the
data formats, the run machinery and the experiment's orchestration.

    python studies/code_shares.py [REVISION]      # default: the working tree

Lines are physical lines of the product (cxr/ and the three scripts), docstrings included;
modules are classified by the table below, which names the flat layout's modules too, so
that one revision before the packages and one after are counted alike.
"""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PARTS = {
    "method": (
        "cxr/ssl/",
        "cxr/nn/",
        "cxr/detection/",
        "cxr/data/wbf.py",
        "cxr/data/splits.py",
        "cxr/simclr.py",
        "cxr/ssl_views.py",
        "cxr/global_batchnorm.py",
        "cxr/optim.py",
        "cxr/seeds.py",
        "cxr/backbone.py",
        "cxr/detector.py",
        "cxr/detection_augment.py",
        "cxr/samplers.py",
        "cxr/wbf.py",
        "cxr/splits.py",
    ),
    "model and its loop": ("train_ssl.py", "train_det.py", "cxr/run/engine.py", "cxr/engine.py"),
    "evaluation": (
        "cxr/evaluation/",
        "evaluate.py",
        "cxr/average_precision.py",
        "cxr/coco_metrics.py",
        "cxr/probe.py",
        "cxr/bootstrap.py",
        "cxr/baselines.py",
        "cxr/visualize.py",
        "cxr/submission.py",
    ),
    "orchestration": (
        "cxr/pipeline/",
        "cxr/experiment.py",
        "cxr/report.py",
        "cxr/presets.py",
        "cxr/experiment_folder.py",
        "cxr/svg.py",
    ),
    "run machinery": (
        "cxr/run/",
        "cxr/outputs.py",
        "cxr/run_folder.py",
        "cxr/checkpoint_io.py",
        "cxr/cli.py",
        "cxr/distributed.py",
        "cxr/progress.py",
        "cxr/errors.py",
        "cxr/layout.py",
    ),
    "data formats": ("cxr/",),  # everything else in cxr/: readers, prepare, synthetic data
}


def product_files(revision):
    if revision is None:
        files = [*REPO.glob("*.py"), *(REPO / "cxr").rglob("*.py")]
        names = [str(p.relative_to(REPO)) for p in files if p.name != "__init__.py"]
        return {n: (REPO / n).read_text() for n in names if not n.startswith(("bench", "studies"))}
    listed = subprocess.run(
        ["git", "ls-tree", "-r", "--name-only", revision], cwd=REPO, capture_output=True, text=True
    ).stdout.split()
    names = [
        n
        for n in listed
        if n.endswith(".py")
        and (n.startswith("cxr/") or "/" not in n)
        and not n.endswith("__init__.py")
    ]
    return {n: git_show(revision, n) for n in names}


def git_show(revision, name):
    command = ["git", "show", f"{revision}:{name}"]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True).stdout


def part_of(name):
    return next(part for part, prefixes in PARTS.items() if name.startswith(prefixes))


def main():
    revision = sys.argv[1] if len(sys.argv) > 1 else None
    counts = {part: 0 for part in PARTS}
    for name, text in product_files(revision).items():
        counts[part_of(name)] += len(text.splitlines())
    total = sum(counts.values())
    print(f"{revision or 'working tree'}: {total} product lines")
    for part, lines in counts.items():
        print(f"  {part:<20} {lines:>6}  {lines / total:6.1%}")
    core = sum(counts[p] for p in ("method", "model and its loop", "evaluation"))
    print(f"  method + model and its loop + evaluation: {core / total:.1%}")


if __name__ == "__main__":
    main()
