"""An SSL pool of unlabeled films that shares no patient with a COCO file.

`--extra-images` refuses a film of a patient with a test image (cxr.data.ssl_pool).
This links every image of --images whose patient (the first group of
--group-by) has no image in --coco into --out, e.g. the NIH films of patients
ChestX-Det did not annotate:

    python studies/pool_without_patients.py \
        --coco ../shared/real-cxr/chestx-det/annotations.json \
        --images ../shared/real-cxr/nih-unlabeled/images --group-by '^([0-9]+)_' --out pool
"""

import argparse
import json
import re
from pathlib import Path


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--coco", type=Path, required=True, help="the labeled COCO file")
    parser.add_argument("--images", type=Path, required=True, help="the unlabeled films")
    parser.add_argument("--group-by", type=re.compile, required=True, help="patient regex")
    parser.add_argument("--out", type=Path, required=True, help="new folder of symlinks")
    args = parser.parse_args()

    def patient(name):
        match = args.group_by.search(Path(name).name)
        return match.group(1) if match else None

    images = json.loads(args.coco.read_text())["images"]
    labeled = {patient(image["file_name"]) for image in images} - {None}
    args.out.mkdir()
    kept = 0
    for film in sorted(args.images.iterdir()):
        if patient(film.name) is not None and patient(film.name) not in labeled:
            (args.out / film.name).symlink_to(film.resolve())
            kept += 1
    print(f"{kept} films of patients without a labeled image linked into {args.out}")


if __name__ == "__main__":
    main()
