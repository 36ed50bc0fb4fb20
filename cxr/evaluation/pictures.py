"""Pictures of detections: ground truth and predictions on one radiograph, and
a contact sheet of several. Drawn with Pillow only.

Styles, so the two can be told apart at a glance (and in grayscale print):
ground truth is a solid box with its class name on a filled tag above it;
a prediction is a dashed box with "name score" on a dark tag inside its
bottom-left corner. Both use the class's colour from `cxr.data.classes`. A legend
strip under the image says which is which and the score threshold.
"""

from PIL import Image, ImageDraw, ImageFont

GT_WIDTH, PREDICTION_WIDTH, DASH = 3, 2, 8
LEGEND_HEIGHT = 22

# Distinct RGB colours for drawings, one per class (repeating after the 14th).
PALETTE = (
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


def class_color(category):
    """The drawing colour of a COCO category id (1..K)."""
    return PALETTE[(category - 1) % len(PALETTE)]


def _font():
    return ImageFont.load_default()


def _dashed_rectangle(draw, box, color, width, dash=DASH):
    x0, y0, x1, y1 = box
    for a0, a1, fixed, horizontal in (
        (x0, x1, y0, True),
        (x0, x1, y1, True),
        (y0, y1, x0, False),
        (y0, y1, x1, False),
    ):
        start = a0
        while start < a1:
            end = min(start + dash, a1)
            draw.line(
                [(start, fixed), (end, fixed)] if horizontal else [(fixed, start), (fixed, end)],
                fill=color,
                width=width,
            )
            start += 2 * dash


def readable_text_color(background):
    """Black on light backgrounds, white on dark ones (ITU-R BT.601 luma)."""
    r, g, b = background
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 128 else (255, 255, 255)


def _tag(draw, xy, text, *, fill, text_color, font):
    left, top, right, bottom = draw.textbbox(xy, text, font=font)
    draw.rectangle((left - 2, top - 1, right + 2, bottom + 1), fill=fill)
    draw.text(xy, text, fill=text_color, font=font)


def draw_detections(gray, *, ground_truth, predictions, classes, score_threshold, size=512):
    """An RGB picture of a grayscale PIL image with its boxes.

    ground_truth: (category_id, xyxy) pairs; predictions: (category_id, score,
    xyxy) triples, drawn when score >= score_threshold; boxes in the image's
    pixels (scaled with the picture, whose longer side becomes `size`);
    classes: the names of categories 1..K."""
    scale = size / max(gray.size)
    shown = (round(gray.width * scale), round(gray.height * scale))
    picture = Image.new("RGB", (shown[0], shown[1] + LEGEND_HEIGHT), (0, 0, 0))
    picture.paste(gray.convert("RGB").resize(shown, Image.BILINEAR), (0, 0))
    draw, font = ImageDraw.Draw(picture), _font()
    for category, box in ground_truth:
        x0, y0, x1, y1 = (round(c * scale) for c in box)
        color = class_color(category)
        draw.rectangle((x0, y0, x1, y1), outline=color, width=GT_WIDTH)
        name = classes[category - 1]
        tag_color = readable_text_color(color)
        _tag(draw, (x0 + 2, max(y0 - 13, 0)), name, fill=color, text_color=tag_color, font=font)
    for category, score, box in predictions:
        if score < score_threshold:
            continue
        x0, y0, x1, y1 = (round(c * scale) for c in box)
        color = class_color(category)
        _dashed_rectangle(draw, (x0, y0, x1, y1), color, PREDICTION_WIDTH)
        label = f"{classes[category - 1]} {score:.2f}"
        at = (x0 + 3, max(y1 - 14, y0 + 2))
        _tag(draw, at, label, fill=(20, 20, 20), text_color=color, font=font)
    _legend(draw, font, shown[1] + 5, score_threshold)
    return picture


def _legend(draw, font, y, score_threshold):
    draw.line([(6, y + 6), (36, y + 6)], fill=(255, 255, 255), width=GT_WIDTH)
    draw.text((42, y), "ground truth", fill=(255, 255, 255), font=font)
    _dashed_rectangle(draw, (140, y + 6, 170, y + 6), (255, 255, 255), PREDICTION_WIDTH, dash=5)
    label = f"prediction (score >= {score_threshold:g})"
    draw.text((176, y), label, fill=(255, 255, 255), font=font)


def contact_sheet(pictures, captions, columns=4, thumb_size=256):
    """The pictures as thumbnails in a grid (at most `columns` wide, no wider than
    the pictures need), each with its caption underneath."""
    columns = max(1, min(columns, len(pictures)))
    rows = -(-len(pictures) // columns)
    caption_height = 16
    sheet = Image.new(
        "RGB", (columns * thumb_size, rows * (thumb_size + caption_height)), (255, 255, 255)
    )
    draw, font = ImageDraw.Draw(sheet), _font()
    for i, (picture, caption) in enumerate(zip(pictures, captions)):
        thumb = picture.copy()
        thumb.thumbnail((thumb_size, thumb_size))
        x, y = (i % columns) * thumb_size, (i // columns) * (thumb_size + caption_height)
        sheet.paste(thumb, (x + (thumb_size - thumb.width) // 2, y))
        draw.text((x + 4, y + thumb_size + 2), caption, fill=(0, 0, 0), font=font)
    return sheet
