"""A synthetic VinBigData training set in the real 512 px download's layout.

    python -m cxr.synthetic --out DIR --images N --size 512 --seed S

writes DIR/train.csv (image_id,class_name,class_id,rad_id,x_min,y_min,x_max,
y_max,width,height), DIR/train/ and DIR/test/ (unlabeled PNGs) with
DIR/test_meta.csv (image_id,dim0,dim1: their original sizes), so every
stage runs without the real data. It imitates the real table's statistics
(docs/design.md): radiograph-like anatomy jittered per image, 14 lesion
classes with their real sites, sizes and long-tailed frequencies, three of 17
readers per image who each mark a lesion with probability 0.75, "No finding"
rows, boxes in varied DICOM sizes while the PNG is square. Image-wide
variation is kept small: stronger, it became a per-image fingerprint that
SimCLR learned instead of anatomy (docs/experiments.md). A stand-in for tests
and the demo: its numbers test the machinery, not the method.
"""

import csv
import io
import math
import time
from dataclasses import dataclass

import numpy as np
from PIL import Image

from cxr.data.classes import (
    CSV_BOX_COLUMNS,
    CSV_SIZE_COLUMNS,
    NO_FINDING_ID,
    NO_FINDING_NAME,
    VINBIGDATA_CLASSES,
)
from cxr.nn.seeds import stream_seed
from cxr.run.outputs import staged_directory

REAL_IMAGES = 15000
REAL_FINDING_IMAGES = 4394
RADIOLOGISTS = tuple(f"R{i}" for i in range(1, 18))
READERS_PER_IMAGE = 3
MARK_PROBABILITY = 0.75
BOX_JITTER = 0.04  # std of each edge's shift, as a fraction of the box side
ORIGINAL_SIZES = ((1994, 2430), (3072, 3072), (2304, 2880), (2048, 2500), (2336, 2836))
CSV_COLUMNS = (*CSV_BOX_COLUMNS, *CSV_SIZE_COLUMNS)


@dataclass(frozen=True)
class LesionSpec:
    """Real statistics of one class and where its synthetic lesions go."""

    box_rows: int  # rows of this class in the real train.csv
    images: int  # real images with this class
    median_w: float  # median box size, fraction of the image
    median_h: float
    site: str  # key of SITES: where the lesion centre is drawn

    @property
    def share(self):
        """Share of finding images that contain this class."""
        return self.images / REAL_FINDING_IMAGES

    @property
    def extra_lesions(self):
        """Poisson mean of lesions beyond the first, from rows per image."""
        expected_readers = READERS_PER_IMAGE * MARK_PROBABILITY
        return max(0.0, self.box_rows / self.images / expected_readers - 1.0)


LESION_SPECS = (
    LesionSpec(7162, 3067, 0.118, 0.116, "aortic_knob"),
    LesionSpec(279, 186, 0.200, 0.193, "lung_lower"),
    LesionSpec(960, 452, 0.064, 0.065, "lung"),
    LesionSpec(5427, 2300, 0.435, 0.135, "heart"),
    LesionSpec(556, 353, 0.182, 0.182, "lung_lower"),
    LesionSpec(1000, 386, 0.219, 0.351, "lung_lower"),
    LesionSpec(1247, 613, 0.181, 0.184, "lung"),
    LesionSpec(2483, 1322, 0.155, 0.143, "lung"),
    LesionSpec(2580, 826, 0.040, 0.035, "lung"),
    LesionSpec(2203, 1134, 0.116, 0.125, "lung"),
    LesionSpec(2476, 1032, 0.087, 0.101, "lung_base"),
    LesionSpec(4842, 1981, 0.093, 0.053, "lung_apex"),
    LesionSpec(226, 96, 0.268, 0.281, "lung_apex"),
    LesionSpec(4655, 1617, 0.118, 0.095, "lung_upper"),
)


@dataclass
class Anatomy:
    """Per-image anatomy in normalized coordinates (x right, y down)."""

    lungs: tuple  # two (cx, cy, rx, ry) ellipses: image-left, image-right
    heart: tuple  # (cx, cy, rx, ry)
    midline: float
    aortic_knob: tuple  # (cx, cy)


def sample_anatomy(rng):
    midline = 0.5 + rng.normal(0, 0.01)
    spread, cy = 0.19 + rng.normal(0, 0.008), 0.46 + rng.normal(0, 0.015)
    rx, ry = 0.165 + rng.normal(0, 0.008), 0.3 + rng.normal(0, 0.012)
    lungs = ((midline - spread, cy, rx, ry), (midline + spread, cy, rx, ry))
    heart = (midline + 0.035 + rng.normal(0, 0.01), cy + 0.17, 0.13 + rng.normal(0, 0.008), 0.1)
    knob = (midline + 0.05, cy - 0.14)
    return Anatomy(lungs, heart, midline, knob)


def _site_centre(site, anatomy, rng, size_wh):
    """A lesion centre for a site, given the lesion's (w, h)."""
    w, h = size_wh
    if site == "aortic_knob":
        return anatomy.aortic_knob[0] + rng.normal(0, 0.01), anatomy.aortic_knob[1] + rng.normal(
            0, 0.01
        )
    if site == "heart":
        return anatomy.heart[0] + rng.normal(0, 0.01), anatomy.heart[1] + anatomy.heart[3] * 0.3
    cx, cy, rx, ry = anatomy.lungs[rng.integers(2)]
    side = -1 if cx < anatomy.midline else 1
    if site == "lung_base":
        return cx + side * (rx - w / 2) * 0.8, cy + ry - h / 2 - 0.02
    if site == "lung_apex":
        return cx + side * rx * 0.35 * rng.random(), cy - ry * 0.75 + h / 2
    low, high = {"lung": (-0.6, 0.6), "lung_lower": (0.05, 0.6), "lung_upper": (-0.65, -0.1)}[site]
    return cx + rng.uniform(-0.55, 0.55) * (rx - w / 4), cy + rng.uniform(low, high) * ry


def _ellipse(x, y, ellipse, softness=0.15):
    """1 inside the ellipse (cx, cy, rx, ry), 0 outside, with a soft edge of relative
    width softness."""
    cx, cy, rx, ry = ellipse
    r = np.sqrt(((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2)
    return np.clip((1 - r) / softness, 0, 1)


def render_anatomy(anatomy, size, rng):
    """A lesion-free chest radiograph as float32 in [0, 1]."""
    axis = (np.arange(size, dtype=np.float32) + 0.5) / size
    x, y = axis[None, :], axis[:, None]
    image = np.full((size, size), 0.08, np.float32)
    image += 0.42 * _ellipse(x, y, (anatomy.midline, 0.6, 0.47, 0.62), 0.1)
    lung_mask = sum(_ellipse(x, y, lung, 0.12) for lung in anatomy.lungs)
    ribs = 0.5 + 0.5 * np.cos(2 * np.pi * (y * 11 + 2.2 * (x - anatomy.midline) ** 2))
    image -= lung_mask * (0.3 - 0.08 * ribs**3)
    image += 0.22 * np.clip(1 - np.abs(x - anatomy.midline) / 0.05, 0, 1) ** 0.5
    image += 0.16 * _ellipse(x, y, anatomy.heart, 0.3)
    image += _smooth_noise(rng, size, cells=16, amplitude=0.01)
    image += rng.normal(0, 0.015, (size, size)).astype(np.float32)
    return image


def _smooth_noise(rng, size, cells, amplitude):
    """Low-frequency noise: a random cells x cells field upsampled bicubically."""
    field = rng.normal(0, 1, (cells, cells)).astype(np.float32)
    big = Image.fromarray(field, mode="F").resize((size, size), Image.BICUBIC)
    return amplitude * np.asarray(big)


def _draw_lesion(image, class_id, box, rng):
    """Add the visual signature of `class_id` inside `box` (pixel xyxy) in place."""
    size = image.shape[0]
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, size), min(y1, size)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return
    patch = image[y0:y1, x0:x1]
    h, w = patch.shape
    u = ((np.arange(w) + 0.5) / w)[None, :]
    v = ((np.arange(h) + 0.5) / h)[:, None]
    disk = _ellipse(u, v, (0.5, 0.5, 0.5, 0.5), 0.3)
    name = VINBIGDATA_CLASSES[class_id]
    if name in ("Aortic enlargement", "Cardiomegaly"):
        patch += 0.22 * disk
    elif name == "Atelectasis":
        angle = rng.uniform(-0.5, 0.5)
        band = np.abs((v - 0.5) * math.cos(angle) - (u - 0.5) * math.sin(angle))
        patch += 0.22 * np.clip(1 - band / 0.18, 0, 1) * disk**0.3
    elif name == "Calcification":
        for cx, cy in rng.uniform(0.25, 0.75, (rng.integers(3, 7), 2)):
            patch += 0.55 * _ellipse(u, v, (cx, cy, 0.12, 0.12), 0.5)
    elif name == "Consolidation":
        patch += 0.32 * disk**0.5 - 0.08 * disk * (np.abs(np.sin(9 * u + 3 * v)) < 0.15)
    elif name == "ILD":
        mesh = np.abs(np.sin(np.pi * 9 * u)) < 0.25
        mesh = mesh | (np.abs(np.sin(np.pi * 11 * v)) < 0.25)
        patch += 0.16 * mesh * disk
    elif name == "Infiltration":
        blotches = _smooth_noise(rng, max(h, w), cells=5, amplitude=1.0)[:h, :w]
        patch += 0.25 * disk * (blotches > 0)
    elif name == "Lung Opacity":
        patch += 0.24 * np.exp(-(((u - 0.5) / 0.3) ** 2 + ((v - 0.5) / 0.3) ** 2))
    elif name == "Nodule/Mass":
        patch += 0.4 * _ellipse(u, v, (0.5, 0.5, 0.5, 0.5), 0.1)
    elif name == "Other lesion":
        r = np.sqrt((u - 0.5) ** 2 + (v - 0.5) ** 2)
        patch += 0.3 * np.clip(1 - np.abs(r - 0.38) / 0.1, 0, 1)
    elif name == "Pleural effusion":
        meniscus = v > 0.25 + 0.6 * (u - 0.5) ** 2
        patch += 0.38 * meniscus
    elif name == "Pleural thickening":
        patch += 0.3 * np.clip(1 - np.abs(v - 0.5) / 0.35, 0, 1)
    elif name == "Pneumothorax":
        patch[:] = patch * (1 - disk) + (0.04 + 0.02 * patch.mean()) * disk
        edge = np.clip(1 - np.abs(np.sqrt((u - 0.5) ** 2 + (v - 0.5) ** 2) - 0.46) / 0.03, 0, 1)
        patch += 0.2 * edge
    elif name == "Pulmonary fibrosis":
        for _ in range(rng.integers(3, 6)):
            angle, offset = rng.uniform(0, np.pi), rng.uniform(-0.3, 0.3)
            line = np.abs((u - 0.5) * math.sin(angle) - (v - 0.5) * math.cos(angle) - offset)
            patch += 0.28 * np.clip(1 - line / 0.05, 0, 1) * disk
    else:
        raise AssertionError(f"no signature for class {name!r}")


@dataclass
class ImagePlan:
    """Everything about one synthetic image before it is drawn."""

    image_id: str
    original_size: tuple  # (width, height) of the pretend DICOM
    readers: tuple  # three radiologist ids
    lesions: list  # (class_id, xyxy normalized)
    marks: list  # per reader: list of (class_id, xyxy normalized)
    anatomy: Anatomy


def _sample_box(spec, anatomy, rng):
    w = float(np.clip(spec.median_w * math.exp(rng.normal(0, 0.25)), 0.015, 0.7))
    h = float(np.clip(spec.median_h * math.exp(rng.normal(0, 0.25)), 0.015, 0.7))
    cx, cy = _site_centre(spec.site, anatomy, rng, (w, h))
    cx, cy = float(np.clip(cx, w / 2, 1 - w / 2)), float(np.clip(cy, h / 2, 1 - h / 2))
    return (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)


def _sample_lesions(anatomy, rng):
    shares = np.array([spec.share for spec in LESION_SPECS])
    present = rng.random(len(shares)) < shares
    while not present.any():
        present = rng.random(len(shares)) < shares
    lesions = []
    for class_id in np.flatnonzero(present):
        spec = LESION_SPECS[class_id]
        for _ in range(1 + rng.poisson(spec.extra_lesions)):
            lesions.append((int(class_id), _sample_box(spec, anatomy, rng)))
    return lesions


def _reader_marks(lesions, rng):
    """Which reader marks which lesion, with each reader's own jittered box."""
    marked = rng.random((len(lesions), READERS_PER_IMAGE)) < MARK_PROBABILITY
    for row in np.flatnonzero(~marked.any(axis=1)):
        marked[row, rng.integers(READERS_PER_IMAGE)] = True
    marks = [[] for _ in range(READERS_PER_IMAGE)]
    for (class_id, box), readers in zip(lesions, marked):
        w, h = box[2] - box[0], box[3] - box[1]
        for reader in np.flatnonzero(readers):
            shift = rng.normal(0, BOX_JITTER, 4) * np.array([w, h, w, h])
            jittered = np.clip(np.array(box) + shift, 0, 1)
            marks[reader].append((class_id, tuple(float(c) for c in jittered)))
    return marks


def plan_image(rng, has_findings):
    """Sample one image's anatomy, lesions and the three readers' marks."""
    anatomy = sample_anatomy(rng)
    lesions = _sample_lesions(anatomy, rng) if has_findings else []
    readers = tuple(rng.choice(RADIOLOGISTS, READERS_PER_IMAGE, replace=False))
    return ImagePlan(
        image_id=rng.bytes(16).hex(),
        original_size=ORIGINAL_SIZES[rng.integers(len(ORIGINAL_SIZES))],
        readers=readers,
        lesions=lesions,
        marks=_reader_marks(lesions, rng) if lesions else [[] for _ in readers],
        anatomy=anatomy,
    )


def plan_dataset(num_images, seed, split="train"):
    """Plans for `num_images`, of which round(num_images * 4394 / 15000) have findings.
    Each split draws from its own random stream of the seed."""
    rng = np.random.default_rng(
        stream_seed("synthetic-plan", seed=seed, item=("train", "test").index(split))
    )
    num_findings = round(num_images * REAL_FINDING_IMAGES / REAL_IMAGES)
    has_findings = np.zeros(num_images, dtype=bool)
    has_findings[rng.permutation(num_images)[:num_findings]] = True
    return [plan_image(rng, bool(flag)) for flag in has_findings]


def csv_rows(plan):
    """The train.csv rows of one image, boxes in original pixels."""
    width, height = plan.original_size
    rows = []
    for reader, marks in zip(plan.readers, plan.marks):
        if not marks:
            rows.append(
                (
                    plan.image_id,
                    NO_FINDING_NAME,
                    NO_FINDING_ID,
                    reader,
                    "",
                    "",
                    "",
                    "",
                    width,
                    height,
                )
            )
        for class_id, (x0, y0, x1, y1) in marks:
            coords = (
                f"{round(x0 * width):.1f}",
                f"{round(y0 * height):.1f}",
                f"{round(x1 * width):.1f}",
                f"{round(y1 * height):.1f}",
            )
            rows.append(
                (
                    plan.image_id,
                    VINBIGDATA_CLASSES[class_id],
                    class_id,
                    reader,
                    *coords,
                    width,
                    height,
                )
            )
    return rows


def render_image(plan, size, seed, lesions=True):
    """Draw the planned image as uint8 (size, size), with its lesions at their
    true boxes unless lesions=False (then only the lesion boxes differ)."""
    rng = np.random.default_rng(
        stream_seed("synthetic-pixels", seed=seed, item=int(plan.image_id[:8], 16))
    )
    image = render_anatomy(plan.anatomy, size, rng)
    gamma = math.exp(rng.normal(0, 0.02))
    for class_id, box in plan.lesions if lesions else ():
        _draw_lesion(image, class_id, [c * size for c in box], rng)
    return (np.clip(image, 0, 1) ** gamma * 255 + 0.5).astype(np.uint8)


def encode_png(pixels):
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def write_csv(path, plans, seed):
    """Write train.csv with rows shuffled across images, as the real file is."""
    rows = [row for plan in plans for row in csv_rows(plan)]
    order = np.random.default_rng(stream_seed("synthetic-rows", seed=seed)).permutation(len(rows))
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_COLUMNS)
        writer.writerows(rows[i] for i in order)
    return len(rows)


def write_test_meta(path, plans):
    """test_meta.csv as the 512 px download has it: image_id,dim0,dim1, the original
    DICOM's height and width, which a submission's boxes refer to."""
    lines = ["image_id,dim0,dim1"]
    lines += [f"{p.image_id},{p.original_size[1]},{p.original_size[0]}" for p in plans]
    path.write_text("\n".join(lines) + "\n")


def generate(out, *, num_images, size=512, seed=0, test_images=None, replace=False, log=print):
    """Write a synthetic dataset to `out`; returns a summary dict."""
    test_images = num_images // 5 if test_images is None else test_images
    start = time.perf_counter()
    train_plans = plan_dataset(num_images, seed, "train")
    test_plans = plan_dataset(test_images, seed, "test")
    with staged_directory(out, replace, command="python -m cxr.synthetic") as staging:
        for folder, folder_plans in (("train", train_plans), ("test", test_plans)):
            (staging / folder).mkdir()
            for i, plan in enumerate(folder_plans, 1):
                (staging / folder / f"{plan.image_id}.png").write_bytes(
                    encode_png(render_image(plan, size, seed))
                )
                if i % 500 == 0:
                    log(f"  {folder}: {i}/{len(folder_plans)} images")
        num_rows = write_csv(staging / "train.csv", train_plans, seed)
        write_test_meta(staging / "test_meta.csv", test_plans)
    summary = {
        "images": num_images,
        "test_images": test_images,
        "rows": num_rows,
        "finding_images": sum(bool(p.lesions) for p in train_plans),
        "size": size,
        "seed": seed,
        "seconds": round(time.perf_counter() - start, 2),
    }
    log(
        f"wrote {out}: {summary['images']} train images ({summary['finding_images']} with "
        f"findings), {summary['test_images']} test images, {num_rows} csv rows, {size} px, in "
        f"{summary['seconds']} s"
    )
    return summary
