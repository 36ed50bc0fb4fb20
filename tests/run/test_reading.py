"""The reading boundaries: no module parses a file's JSON but cxr.run.reading, loads a torch
file but cxr.run.checkpoints or opens an image but cxr.data.images and image_files, and every kind
of JSON file cxr reads, corrupted at random, gives one UserError line or a checked value,
never another exception."""

import ast
import copy
import json
import random
from pathlib import Path

import pytest
import torch

from cxr.data.coco_format import read_coco
from cxr.data.image_lists import read_image_list
from cxr.data.original_sizes import read_original_sizes
from cxr.data.pixel_keys import KEY_SIZE, encode_keys
from cxr.data.prepared import load_coco
from cxr.data.ssl_pool import _test_patients
from cxr.pipeline.report_markdown import _train_records
from cxr.pipeline.results import read_experiment_record
from cxr.run.errors import UserError
from cxr.run.model_files import _read_detector_file, backbone_meta
from cxr.run.reading import read_json

REPO = Path(__file__).resolve().parents[2]
PARSES_TEXT_NOT_A_FILE = {("cxr/run/cli.py", "parse_views")}  # --views takes JSON text


# Who may read a file of each kind: (module, function) -> the modules allowed to call it.
BOUNDARIES = {
    ("json", "load"): {"cxr/run/reading.py"},
    ("json", "loads"): {"cxr/run/reading.py"},
    ("torch", "load"): {"cxr/run/checkpoints.py"},
    ("Image", "open"): {"cxr/data/images.py", "cxr/data/image_files.py"},
}


def reads(path):
    """(call, innermost function, line) of every boundary call (`BOUNDARIES`) in a module."""
    found = []

    def visit(node, function):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            function = node.name
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name)
            and (node.func.value.id, node.func.attr) in BOUNDARIES
        ):
            found.append(((node.func.value.id, node.func.attr), function, node.lineno))
        for child in ast.iter_child_nodes(node):
            visit(child, function)

    visit(ast.parse(path.read_text()), None)
    return found


def test_only_the_boundaries_read_json_torch_files_and_images():
    scripts = [REPO / name for name in ("train_ssl.py", "train_det.py", "evaluate.py")]
    modules = [*REPO.glob("cxr/**/*.py"), *scripts]
    outside = set()
    for path in modules:
        name = str(path.relative_to(REPO))
        for call, function, line in reads(path):
            if name not in BOUNDARIES[call] and (name, function) not in PARSES_TEXT_NOT_A_FILE:
                outside.add(f"{name}:{line} ({function}: {'.'.join(call)})")
    assert len(modules) > 40 and outside == set()


# --- one valid file of each kind, and its reader ------------------------------------------------

COCO = {
    "images": [
        {"id": 1, "file_name": "a.png", "width": 64, "height": 64, "original_width": 2000,
         "original_height": 2400},
        {"id": 2, "file_name": "b.png", "width": 64, "height": 64, "original_width": 1800,
         "original_height": 1800},
    ],
    "annotations": [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [4, 5, 20, 30], "area": 600,
         "iscrowd": 0},
        {"id": 2, "image_id": 2, "category_id": 2, "bbox": [10, 10, 8, 8], "area": 64,
         "iscrowd": 0},
    ],
    "categories": [{"id": 1, "name": "Mass"}, {"id": 2, "name": "Nodule"}],
}  # fmt: skip
TRAINED_ON = [{"what": "SSL pool", "data_fingerprint": "ab12", "images": ["a", "b"],
               "pixel_keys": encode_keys(torch.eye(2, KEY_SIZE))}]  # fmt: skip
DETECTOR_META = {
    "arch": "resnet18", "image_size": 64, "classes": ["Mass", "Nodule"], "norm": "bn",
    "trainable_layers": 3, "anchor_sizes": [32, 64, 128, 256, 512], "trained_on": TRAINED_ON,
}  # fmt: skip
BACKBONE_META = {"arch": "resnet18", "image_size": 64, "split_seed": 0, "ssl_fraction": 0.4,
                 "trained_on": TRAINED_ON}  # fmt: skip
EXPERIMENT = {
    "config": {"preset": "cpu", "settings": {"det_epochs": 2}, "ssl_fractions": [0.6],
               "seed": 0, "train_seeds": [0, 1], "pretrained_init": None},
    "stages": {"prepare": {"status": "done"}},
}  # fmt: skip
LOG = [{"event": "train", "step": 1, "loss": 2.5}, {"event": "train", "step": 2, "loss": 2.4}]


def write(path, value):
    path.write_text(json.dumps(value))
    return path


def kinds(folder):
    """{kind: (valid value, file name, reader of the folder)}."""

    def detector(folder):
        torch.save({"w": torch.zeros(1)}, folder / "fasterrcnn_final.pth")
        return _read_detector_file(folder / "fasterrcnn_final.pth")

    def backbone(folder):
        torch.save({"w": torch.zeros(1)}, folder / "pretrained-backbone.pth")
        return backbone_meta(folder / "pretrained-backbone.pth")

    (folder / "images").mkdir(exist_ok=True)
    return {
        "a COCO file to prepare": (COCO, "boxes.json", lambda f: read_coco(f / "boxes.json")),
        "prepared annotations": (COCO, "test_annotations.json",
                                 lambda f: load_coco(f / "test_annotations.json")),
        "original sizes": (COCO, "sizes.json", lambda f: read_original_sizes(f / "sizes.json")),
        "an image list": ({"data_fingerprint": "ab12", "images": ["a", "b"]}, "list.json",
                          lambda f: read_image_list(f / "list.json")),
        "the split": ({"train": ["1_0"], "test": ["2_0"], "group_pattern": "^([0-9]+)_"},
                      "split.json", lambda f: _test_patients([Path("1_1.png")], f)),
        "backbone metadata": (BACKBONE_META, "pretrained-backbone.json", backbone),
        "detector metadata": (DETECTOR_META, "fasterrcnn_final.json", detector),
        "the experiment record": (EXPERIMENT, "experiment.json", read_experiment_record),
    }  # fmt: skip


OTHER_VALUES = [None, True, 0, -1, 1e300, "", "x", [], [1, "a"], {}, {"a": []}]


def nodes(value, path=()):
    """Every (path, value) inside a JSON value."""
    yield path, value
    children = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(
        value, list) else ()  # fmt: skip
    for key, child in children:
        yield from nodes(child, (*path, key))


def corrupted(value, rng):
    """A copy of a JSON value, structurally corrupted in one of several ways, as text."""
    text = json.dumps(value)
    how = rng.choice(["truncate", "replace", "delete", "whole", "empty", "nest", "nan"])
    if how == "truncate":
        return text[: rng.randrange(len(text))]
    if how == "empty":
        return ""
    if how == "nest":
        return "[" * 50000 + "]" * 50000
    if how == "nan":
        return text.replace("64", "NaN", 1)
    if how == "whole":
        return json.dumps(rng.choice(OTHER_VALUES))
    value = copy.deepcopy(value)
    path, _ = rng.choice([n for n in nodes(value) if n[0]])
    parent = value
    for key in path[:-1]:
        parent = parent[key]
    if how == "delete":
        parent.pop(path[-1]) if isinstance(parent, dict) else parent.pop(path[-1])
    else:
        parent[path[-1]] = rng.choice(OTHER_VALUES)
    return json.dumps(value)


KINDS = [
    "a COCO file to prepare",
    "prepared annotations",
    "original sizes",
    "an image list",
    "the split",
    "backbone metadata",
    "detector metadata",
    "the experiment record",
]


@pytest.mark.parametrize("kind", KINDS)
def test_a_corrupted_file_is_one_user_error_or_a_checked_value(tmp_path, kind):
    value, name, read = kinds(tmp_path)[kind]
    write(tmp_path / name, value)
    read(tmp_path)  # the valid file reads
    rng, outcomes = random.Random(kind), {"error": 0, "read": 0}
    for _ in range(60):
        (tmp_path / name).write_text(corrupted(value, rng))
        try:
            read(tmp_path)
            outcomes["read"] += 1
        except UserError as error:
            assert "\n" not in str(error) and name in str(error), str(error)
            outcomes["error"] += 1
    assert outcomes["error"] >= 30


def test_the_log_reader_names_the_line_of_a_cut_short_record(tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_text("\n".join(json.dumps(r) for r in LOG) + '\n{"event": "tr')
    with pytest.raises(UserError, match=r"log.jsonl, line 3 is not valid JSON"):
        _train_records(log)


def test_nan_and_infinity_are_not_json(tmp_path):
    for text in ("NaN", '{"a": Infinity}', "[-Infinity]"):
        (tmp_path / "x.json").write_text(text)
        with pytest.raises(UserError, match="x.json is not valid JSON .* is not a JSON number"):
            read_json(tmp_path / "x.json", what="x")
