"""Shared test helpers."""

from cxr.prepare import prepare
from cxr.synthetic import generate


def prepared_synthetic(root, num_images, seed, size=64):
    """A synthetic dataset under root/vin, prepared with --keep-normal into root/data."""
    generate(
        root / "vin",
        num_images=num_images,
        size=size,
        seed=seed,
        test_images=0,
        log=lambda *_: None,
    )
    prepare(
        root / "vin" / "train.csv",
        root / "vin" / "train",
        root / "data",
        keep_normal=True,
        log=lambda *_: None,
    )
    return root / "data"
