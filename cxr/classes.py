"""The 14 VinBigData lesion classes: ids, names, colors. One source of truth.

VinBigData `class_id` runs 0..13 for lesions and 14 for "No finding".
COCO `category_id` is `class_id + 1` (1..14) so that 0 stays the detector's
background label; the model's label is the category id.
Names are spelled exactly as in the competition's train.csv.
"""

CLASS_NAMES = (
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
NUM_CLASSES = len(CLASS_NAMES)

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

# One distinct, colour-blind-friendly-ish RGB colour per class for drawings.
CLASS_COLORS = (
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
    (0, 128, 128),
    (220, 190, 255),
    (170, 110, 40),
    (128, 0, 0),
)


# NIH ChestX-ray14's eight boxed findings (Wang et al., 2017; BBox_List_2017.csv,
# spelled as there) as VinBigData classes. Mass and Nodule are one class in
# VinBigData. Pneumonia has no class of its own: radiographically it is an
# airspace opacity, and the RSNA Pneumonia Detection Challenge labelled its
# boxes "Lung Opacity", so it maps there.
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


def category_id(class_id: int) -> int:
    """COCO category id (1..14) of a VinBigData lesion class id (0..13)."""
    return class_id + 1


def class_id(category: int) -> int:
    """VinBigData class id (0..13) of a COCO category id (1..14)."""
    return category - 1


def coco_categories() -> list:
    """The COCO `categories` list: ids 1..14 with the CSV's names."""
    return [
        {"id": category_id(i), "name": name, "supercategory": "lesion"}
        for i, name in enumerate(CLASS_NAMES)
    ]
