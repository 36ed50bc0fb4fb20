"""Benchmark: the default experiment's time, stage by stage, against a fixed workload.

    python bench/bench_experiment.py [--out DIR] [--keep]

Runs `python -m cxr.experiment` with its defaults (what `make experiment` runs),
then prints each stage's seconds, the part of each that is the interpreter's
start and imports (timed alone: python -c "import torch, torchvision, cxr..."),
and the shares of the work the issue of speed is about: SimCLR's epochs and its
precise BatchNorm, the detectors' epochs and their evaluations, the probes, mAP
and pictures, the report. Last, a reference workload timed in the same run (a
resnet18 forward and backward on 8 x 3 x 128 x 128, 30 steps, the torch threads
the stages get) and the ratio of the experiment's time to it (the reference timed before
and after, the quicker kept): a change that raises the ratio by more than a
fifth has made the experiment slower, on any machine.
"""

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torchvision

REPO = Path(__file__).resolve().parents[1]
RECORDED_RATIO = 169  # docs/benchmarks.md: the experiment's time over the reference workload


def reference_seconds(steps=30):
    """A fixed resnet18 training loop: the machine's speed for the ratio."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(8, 3, 128, 128), torch.randint(0, 1000, (8,))
    best = float("inf")
    for _ in range(2):
        start = time.perf_counter()
        for _ in range(steps):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
        best = min(best, time.perf_counter() - start)
    return best


def import_seconds():
    """An interpreter's start with the imports every stage makes."""
    command = [sys.executable, "-c", "import torch, torchvision, pycocotools, cxr.run.engine"]
    times = []
    for _ in range(3):
        start = time.perf_counter()
        subprocess.run(command, check=True)
        times.append(time.perf_counter() - start)
    return min(times)


def events(log_path):
    return [json.loads(line) for line in Path(log_path).read_text().splitlines()]


def ssl_parts(run):
    """(epochs' seconds, precise BatchNorm's seconds) of a SimCLR run's log."""
    records = events(run / "pretrain" / "log.jsonl")
    start = next(r["time"] for r in records if r["event"] == "data")
    last_epoch = max(r["time"] for r in records if r["event"] == "epoch")
    precise = next((r["time"] for r in records if r["event"] == "precise_bn"), last_epoch)
    return last_epoch - start, precise - last_epoch


def detector_parts(run):
    """(training seconds, evaluation seconds) of a detector run's log: an epoch's
    evaluation is the time from its last progress line to its closing line."""
    records = events(run / "log.jsonl")
    start = next(r["time"] for r in records if r["event"] == "data")
    evaluation, last_train = 0.0, None
    for r in records:
        if r["event"] == "train":
            last_train = r["time"]
        elif r["event"] == "epoch":
            evaluation += r["time"] - last_train
    end = max(r["time"] for r in records if r["event"] == "epoch")
    return end - start - evaluation, evaluation


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", default=None, help="the experiment folder (default: a temporary one)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the experiment folder")
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="cxr-bench-")) / "experiment"
    reference = reference_seconds()
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "cxr.experiment", "--out", str(out)],
        cwd=REPO,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    wall = time.perf_counter() - started
    reference = min(reference, reference_seconds())  # before and after: the quieter one
    imports = import_seconds()
    stages = json.loads((out / "experiment.json").read_text())["stages"]
    print("| stage | seconds | of which start and imports |\n|---|---|---|")
    for name, entry in stages.items():
        print(f"| {name} | {entry['seconds']:.0f} | {min(imports, entry['seconds']):.1f} |")
    runs = out / "runs"
    shares = {
        "SimCLR epochs": 0.0,
        "precise BatchNorm": 0.0,
        "detector epochs": 0.0,
        "detector evaluations": 0.0,
    }
    for run in sorted(runs.glob("ssl*")):
        epochs, precise = ssl_parts(run)
        shares["SimCLR epochs"] += epochs
        shares["precise BatchNorm"] += precise
    for run in sorted(p for p in runs.iterdir() if (p / "log.jsonl").is_file()):
        training, evaluation = detector_parts(run)
        shares["detector epochs"] += training
        shares["detector evaluations"] += evaluation
    for kind, prefix in (("probes", "probe-"), ("mAP and pictures", "map-"), ("report", "report")):
        shares[kind] = sum(e["seconds"] for n, e in stages.items() if n.startswith(prefix))
    shares["starts and imports"] = imports * len(stages)
    print(f"\n| part | seconds | share of {wall:.0f} s |\n|---|---|---|")
    for part, seconds in shares.items():
        print(f"| {part} | {seconds:.0f} | {seconds / wall:.1%} |")
    ratio = wall / reference
    print(
        f"\nexperiment {wall:.0f} s; reference workload {reference:.2f} s; ratio "
        f"{ratio:.0f} (torch {torch.__version__}, {torch.get_num_threads()} threads)"
    )
    change = ratio / RECORDED_RATIO - 1
    verdict = "SLOWER by more than a fifth" if change > 0.2 else "within a fifth"
    print(f"against the ratio in docs/benchmarks.md ({RECORDED_RATIO}): {change:+.0%}, {verdict}")
    if not args.keep and not args.out:
        shutil.rmtree(out.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
