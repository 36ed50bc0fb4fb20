"""The synthetic dataset has the real download's layout and statistics."""

import csv
from collections import defaultdict

import numpy as np
import pytest
from PIL import Image

from cxr.data.classes import NO_FINDING_ID, NO_FINDING_NAME, VINBIGDATA_CLASSES
from cxr.data.original_sizes import read_original_sizes
from cxr.data.synthetic_xrays import (
    CSV_COLUMNS,
    LESION_SPECS,
    ORIGINAL_SIZES,
    RADIOLOGISTS,
    REAL_FINDING_IMAGES,
    REAL_IMAGES,
    generate,
    plan_dataset,
    render_image,
)
from cxr.run.errors import UserError


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic") / "vinbigdata"
    generate(out, num_images=30, size=64, seed=3, test_images=4, log=lambda *_: None)
    with open(out / "train.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return out, rows


def test_layout_matches_the_real_download(dataset):
    out, rows = dataset
    assert tuple(rows[0]) == CSV_COLUMNS
    ids = {r["image_id"] for r in rows}
    assert {p.stem for p in (out / "train").glob("*.png")} == ids
    tests = sorted(p.stem for p in (out / "test").glob("*.png"))
    assert len(tests) == 4
    sizes = read_original_sizes(out / "test_meta.csv")  # what predict --original-sizes reads
    assert sorted(sizes) == tests and all(size in ORIGINAL_SIZES for size in sizes.values())
    for path in list((out / "train").glob("*.png"))[:5]:
        with Image.open(path) as image:
            assert image.mode == "L" and image.size == (64, 64)


def test_three_distinct_readers_and_no_finding_rows(dataset):
    _, rows = dataset
    by_image = defaultdict(list)
    for r in rows:
        by_image[r["image_id"]].append(r)
    num_findings = 0
    for image_rows in by_image.values():
        readers = {r["rad_id"] for r in image_rows}
        assert len(readers) == 3 and readers <= set(RADIOLOGISTS)
        if all(r["class_id"] == str(NO_FINDING_ID) for r in image_rows):
            assert len(image_rows) == 3
        else:
            num_findings += 1
        for r in image_rows:
            if r["class_id"] == str(NO_FINDING_ID):
                assert r["class_name"] == NO_FINDING_NAME
                assert (r["x_min"], r["y_min"], r["x_max"], r["y_max"]) == ("", "", "", "")
            else:
                assert r["class_name"] == VINBIGDATA_CLASSES[int(r["class_id"])]
                x0, y0, x1, y1 = (float(r[k]) for k in ("x_min", "y_min", "x_max", "y_max"))
                assert 0 <= x0 < x1 <= int(r["width"]) and 0 <= y0 < y1 <= int(r["height"])
    assert num_findings == round(30 * REAL_FINDING_IMAGES / REAL_IMAGES)


def test_same_seed_same_bytes_other_seed_other_data(dataset, tmp_path):
    out, _ = dataset
    again = tmp_path / "again"
    generate(again, num_images=30, size=64, seed=3, test_images=4, log=lambda *_: None)
    assert (again / "train.csv").read_bytes() == (out / "train.csv").read_bytes()
    for path in (out / "train").glob("*.png"):
        assert (again / "train" / path.name).read_bytes() == path.read_bytes()
    other = tmp_path / "other"
    generate(other, num_images=30, size=64, seed=4, test_images=0, log=lambda *_: None)
    assert (other / "train.csv").read_bytes() != (out / "train.csv").read_bytes()


def test_existing_output_is_refused_without_replace(dataset):
    out, _ = dataset
    with pytest.raises(UserError, match="--replace"):
        generate(out, num_images=2, size=64, seed=0, log=lambda *_: None)


def test_class_frequencies_follow_the_real_long_tail():
    plans = [p for p in plan_dataset(6000, seed=0) if p.lesions]
    for class_id, spec in enumerate(LESION_SPECS):
        share = np.mean([any(c == class_id for c, _ in p.lesions) for p in plans])
        # ~1760 finding images: 4 standard errors of a proportion is below 0.05
        assert share == pytest.approx(spec.share, abs=0.05), VINBIGDATA_CLASSES[class_id]


def test_every_lesion_is_marked_by_one_to_three_readers_near_its_box():
    for plan in plan_dataset(400, seed=1):
        for class_id, box in plan.lesions:
            marks = [
                m
                for reader in plan.marks
                for c, m in reader
                if c == class_id
                and np.abs(np.subtract(m, box)).max()
                < 0.25 * max(box[2] - box[0], box[3] - box[1]) + 0.02
            ]
            assert 1 <= len(marks)


def test_lesions_change_pixels_inside_their_boxes_only():
    plan = next(p for p in plan_dataset(50, seed=2) if len(p.lesions) >= 2)
    size = 128
    with_lesions = render_image(plan, size, seed=2).astype(int)
    without = render_image(plan, size, seed=2, lesions=False).astype(int)
    inside = np.zeros((size, size), dtype=bool)
    for _, (x0, y0, x1, y1) in plan.lesions:
        inside[
            int(y0 * size) : int(np.ceil(y1 * size)) + 1,
            int(x0 * size) : int(np.ceil(x1 * size)) + 1,
        ] = True
        patch = (slice(int(y0 * size), int(y1 * size)), slice(int(x0 * size), int(x1 * size)))
        assert np.abs(with_lesions[patch] - without[patch]).mean() > 3
    assert np.array_equal(with_lesions[~inside], without[~inside])
