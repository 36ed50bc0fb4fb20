"""Classes: every prepared dataset's own list, and VinBigData's table.

A prepared data folder's COCO files hold its classes as categories with ids
1..K in order; 0 is the detector's background and the model's label is the
category id. Every stage after `cxr.prepare` reads the list from there
(`dataset_classes`), so a dataset brings its own classes. VinBigData's 14
lesions (class_id 0..13 in train.csv, 14 "No finding", names as written
there) are one such list; NIH's eight boxed findings are another
(`NIH_CLASSES`), and can be mapped onto VinBigData's (`NIH_FINDINGS`).
"""

from cxr.run.errors import UserError

VINBIGDATA_CLASSES = (
    "Aortic enlargement",
    "Atelectasis",
    "Calcification",
    "Cardiomegaly",
    "Consolidation",
    "ILD",
    "Infiltration",
    "Lung Opacity",
    "Nodule/Mass",
    "Other lesion",
    "Pleural effusion",
    "Pleural thickening",
    "Pneumothorax",
    "Pulmonary fibrosis",
)
NO_FINDING_ID = 14
NO_FINDING_NAME = "No finding"

# train.csv: one row per reader box (`No finding` rows have empty box columns);
# width and height, the DICOM's size, are optional for a user's own table.
CSV_BOX_COLUMNS = (
    "image_id",
    "class_name",
    "class_id",
    "rad_id",
    "x_min",
    "y_min",
    "x_max",
    "y_max",
)
CSV_SIZE_COLUMNS = ("width", "height")

# NIH ChestX-ray14's eight boxed findings (Wang et al., 2017; BBox_List_2017.csv,
# spelled as there): NIH data's classes.
NIH_CLASSES = (
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltrate",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
)
# The same findings as VinBigData classes (prepare --nih-classes vinbigdata). Mass
# and Nodule are one class in VinBigData. Pneumonia has no class of its own:
# radiographically it is an airspace opacity, and the RSNA Pneumonia Detection
# Challenge labelled its boxes "Lung Opacity", so it maps there.
NIH_FINDINGS = {
    "Atelectasis": "Atelectasis",
    "Cardiomegaly": "Cardiomegaly",
    "Effusion": "Pleural effusion",
    "Infiltrate": "Infiltration",
    "Mass": "Nodule/Mass",
    "Nodule": "Nodule/Mass",
    "Pneumonia": "Lung Opacity",
    "Pneumothorax": "Pneumothorax",
}


def category_id(position: int) -> int:
    """COCO category id (1..K) of a class's position in its list (0..K-1)."""
    return position + 1


def class_index(category: int) -> int:
    """Position in the class list (0..K-1) of a COCO category id (1..K); for
    VinBigData it is train.csv's class_id."""
    return category - 1


def coco_categories(names) -> list:
    """The COCO `categories` of a class list: ids 1..K in its order."""
    return [
        {"id": category_id(i), "name": name, "supercategory": "lesion"}
        for i, name in enumerate(names)
    ]


def dataset_classes(coco, source) -> tuple:
    """The class names of a COCO dict written by cxr.prepare, checked: its
    categories must have the ids 1..K (source names the file in errors)."""
    categories = sorted(coco.get("categories", []), key=lambda c: c.get("id", 0))
    ids = [c.get("id") for c in categories]
    if not categories or ids != list(range(1, len(categories) + 1)):
        raise UserError(
            f"{source}: its categories must have the ids 1..K (0 is the detector's background); "
            f"found {ids[:10]}. Prepare the data with python -m cxr.prepare"
        )
    return tuple(str(c["name"]) for c in categories)
