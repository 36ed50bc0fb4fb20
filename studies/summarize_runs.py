"""One line per detector run: did it train to the end, its highest logged loss, and its
test AP, AP50 and AP@0.4 (eval/metrics.json, else the last epoch of eval_history.json),
then the mean and range per group of runs named NAME-sSEED.

    python studies/summarize_runs.py RUNS_FOLDER [RUNS_FOLDER ...]
"""

import json
import re
import sys
from collections import defaultdict
from pathlib import Path

KEYS = ("AP", "AP50", "AP40")


def run_summary(run):
    """{name, finished, epochs, max_loss, AP, AP50, AP40} of a train_det.py run folder."""
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if r.get("event") == "train"]
    epochs = [r for r in records if r.get("event") == "epoch"]
    metrics_file, history_file = run / "eval" / "metrics.json", run / "eval_history.json"
    if metrics_file.is_file():
        metrics = json.loads(metrics_file.read_text())
    elif history_file.is_file() and json.loads(history_file.read_text()):
        metrics = json.loads(history_file.read_text())[-1]
    else:
        metrics = {}
    return {
        "name": run.name,
        "finished": (run / "fasterrcnn_final.pth").is_file(),
        "epochs": len(epochs),
        "max_loss": max(losses, default=float("nan")),
        **{key: metrics.get(key) for key in KEYS},
    }


def main(folders):
    groups = defaultdict(list)
    print("| run | trained to the end | epochs | highest logged loss | AP | AP50 | AP@0.4 |")
    print("|---|---|---|---|---|---|---|")
    for folder in map(Path, folders):
        for run in sorted(p for p in folder.iterdir() if (p / "log.jsonl").is_file()):
            row = run_summary(run)
            values = " | ".join("n/a" if row[k] is None else f"{row[k]:.4f}" for k in KEYS)
            print(
                f"| {folder.name}/{row['name']} | {'yes' if row['finished'] else '**no**'} | "
                f"{row['epochs']} | {row['max_loss']:.2f} | {values} |"
            )
            group = re.sub(r"-s\d+$", "", row["name"])
            groups[f"{folder.name}/{group}"].append(row)
    print("\n| group | runs | trained to the end | mean AP50 [min, max] | mean AP [min, max] |")
    print("|---|---|---|---|---|")
    for group, rows in groups.items():
        cells = []
        for key in ("AP50", "AP"):
            values = [r[key] for r in rows if r[key] is not None]
            cells.append(
                f"{sum(values) / len(values):.4f} [{min(values):.4f}, {max(values):.4f}]"
                if values
                else "n/a"
            )
        finished = sum(r["finished"] for r in rows)
        print(f"| {group} | {len(rows)} | {finished} | {cells[0]} | {cells[1]} |")


if __name__ == "__main__":
    main(sys.argv[1:])
