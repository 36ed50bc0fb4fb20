"""What a detector scores without looking at the image: the location prior and chance.

`location_prior(train, test)` predicts, on every test image, each class's
mean training box (its corners as fractions of the image, averaged over the
class's training boxes), scored by the share of training images that hold
the class. Large findings at fixed places (an enlarged heart, an effusion
at the base) score above zero by location alone, so a trained detector has
learned something about lesions only where it clears this prior.
`chance(train, test, rng)` places the same boxes uniformly at random inside
each image: the level of a detector that knows the sizes but not the places.
Both return COCO results that `cxr.evaluation.coco_metrics` scores like a detector's.
"""

import numpy as np


def class_boxes(train):
    """{category id: (mean relative [x, y, w, h], share of training images)} of a COCO dict."""
    sizes = {image["id"]: (image["width"], image["height"]) for image in train["images"]}
    relative, images_with = {}, {}
    for annotation in train["annotations"]:
        width, height = sizes[annotation["image_id"]]
        x, y, w, h = annotation["bbox"]
        relative.setdefault(annotation["category_id"], []).append(
            (x / width, y / height, w / width, h / height)
        )
        images_with.setdefault(annotation["category_id"], set()).add(annotation["image_id"])
    return {
        category: (np.mean(boxes, axis=0), len(images_with[category]) / len(train["images"]))
        for category, boxes in sorted(relative.items())
    }


def _predictions(train, test, place):
    results = []
    for category, ((x, y, w, h), share) in class_boxes(train).items():
        for image in test["images"]:
            x_at, y_at = place(x, y, w, h)
            results.append(
                {
                    "image_id": image["id"],
                    "category_id": category,
                    "bbox": [
                        float(x_at * image["width"]),
                        float(y_at * image["height"]),
                        float(w * image["width"]),
                        float(h * image["height"]),
                    ],
                    "score": share,
                }
            )
    return results


def location_prior(train, test):
    """COCO results: each class's mean training box on every test image."""
    return _predictions(train, test, lambda x, y, w, h: (x, y))


def chance(train, test, rng):
    """COCO results: the prior's boxes placed uniformly at random (numpy Generator rng)."""
    return _predictions(
        train, test, lambda x, y, w, h: (rng.uniform(0, 1 - w), rng.uniform(0, 1 - h))
    )
