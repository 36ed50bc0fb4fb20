"""Box-aware online augmentation for detection, one image at a time in the data
loader's workers: the seed project's albumentations pipeline rewritten in
torch, its probabilities as defaults (`BoxAugmentConfig`): shift-scale-rotate
(p 0.4), horizontal flip (0.5), brightness/contrast (0.25), gamma (0.25),
Gaussian noise (0.2), motion blur (0.1).

A geometric step maps each box to the bounds of its four transformed corners,
clipped to the image; a box under 16 px^2, or under 30% of its unclipped
area, is dropped with its label. Images are float (1, H, W) in [0, 1], boxes
float (N, 4) xyxy in pixels, never modified in place. Every draw comes from
the generator passed in, which the dataset seeds per item from the sampler,
so ranks and workers never share draws.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class BoxAugmentConfig:
    shift: float = 0.0625
    scale: float = 0.1
    rotate_degrees: float = 10.0
    geometric_p: float = 0.4
    hflip_p: float = 0.5
    brightness_contrast: float = 0.15
    brightness_contrast_p: float = 0.25
    gamma: tuple = (0.85, 1.15)
    gamma_p: float = 0.25
    noise_variance: tuple = (10.0, 50.0)
    noise_p: float = 0.2
    motion_blur_p: float = 0.1
    min_area: float = 16.0
    min_visibility: float = 0.3


def hflip(image, boxes):
    """Mirror left-right; box x0, x1 -> W - x1, W - x0."""
    width = image.shape[-1]
    return image.flip(-1), torch.stack(
        [width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], 1
    )


def shift_scale_rotate(image, boxes, *, shift, scale, degrees):
    """Scale by `scale` and rotate by `degrees` (counter-clockwise on screen)
    about the image centre, then shift by (shift[0] * W, shift[1] * H); bilinear,
    zeros outside. image (1, H, W), boxes (N, 4) xyxy; returns the image and
    each box's transformed corners' bounds (unclipped)."""
    shift_x, shift_y = shift
    _, height, width = image.shape
    angle = math.radians(degrees)
    # Forward map in pixel coordinates about the centre, y down: p' = s R p + t.
    rotation = torch.tensor(
        [[math.cos(angle), math.sin(angle)], [-math.sin(angle), math.cos(angle)]],
        dtype=torch.float64,
    )
    forward = scale * rotation
    translation = torch.tensor([shift_x * width, shift_y * height], dtype=torch.float64)
    half = torch.tensor([width / 2, height / 2], dtype=torch.float64)
    # affine_grid wants the inverse map in normalized coordinates u = p / half.
    inverse = torch.linalg.inv(forward)
    theta = torch.cat(
        [
            torch.diag(1 / half) @ inverse @ torch.diag(half),
            (-(torch.diag(1 / half) @ inverse @ translation)).view(2, 1),
        ],
        1,
    )
    grid = F.affine_grid(
        theta.unsqueeze(0).to(image.dtype), (1, 1, height, width), align_corners=False
    )
    warped = F.grid_sample(
        image.unsqueeze(0), grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )[0]
    corners = boxes[:, [0, 1, 2, 1, 2, 3, 0, 3]].view(-1, 4, 2).double() - half
    moved = corners @ forward.T + translation + half
    bounds = torch.cat([moved.min(1).values, moved.max(1).values], 1).to(boxes.dtype)
    return warped, bounds


def clip_and_filter(boxes, labels, *, size, min_area, min_visibility):
    """Clip to an image of size (width, height); drop boxes under min_area px^2 or
    under min_visibility of their unclipped area."""
    width, height = size
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    clipped = torch.stack(
        [
            boxes[:, 0].clamp(0, width),
            boxes[:, 1].clamp(0, height),
            boxes[:, 2].clamp(0, width),
            boxes[:, 3].clamp(0, height),
        ],
        1,
    )
    clipped_area = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
    keep = (clipped_area >= min_area) & (clipped_area >= min_visibility * area)
    return clipped[keep], labels[keep]


def motion_blur(image, direction):
    """3 x 3 line kernel: 0 horizontal, 1 vertical, 2 and 3 the diagonals."""
    kernel = torch.zeros(3, 3, dtype=image.dtype)
    line = [
        ((1, 0), (1, 1), (1, 2)),
        ((0, 1), (1, 1), (2, 1)),
        ((0, 0), (1, 1), (2, 2)),
        ((0, 2), (1, 1), (2, 0)),
    ][direction]
    for row, column in line:
        kernel[row, column] = 1 / 3
    padded = F.pad(image.unsqueeze(0), (1, 1, 1, 1), mode="replicate")
    return F.conv2d(padded, kernel.view(1, 1, 3, 3))[0]


def _uniform(low, high, generator):
    return low + (high - low) * torch.rand((), generator=generator).item()


def _happens(p, generator):
    return torch.rand((), generator=generator).item() < p


class BoxAugment:
    """The training-time pipeline:
    call(image, boxes, labels, generator) -> (image, boxes, labels)."""

    def __init__(self, config=None):
        self.config = config or BoxAugmentConfig()

    def __call__(self, image, boxes, labels, generator):
        c, g = self.config, generator
        _, height, width = image.shape
        if _happens(c.geometric_p, g):
            shift = (_uniform(-c.shift, c.shift, g), _uniform(-c.shift, c.shift, g))
            scale = _uniform(1 - c.scale, 1 + c.scale, g)
            degrees = _uniform(-c.rotate_degrees, c.rotate_degrees, g)
            image, boxes = shift_scale_rotate(
                image, boxes, shift=shift, scale=scale, degrees=degrees
            )
            boxes, labels = clip_and_filter(
                boxes,
                labels,
                size=(width, height),
                min_area=c.min_area,
                min_visibility=c.min_visibility,
            )
        if _happens(c.hflip_p, g):
            image, boxes = hflip(image, boxes)
        if _happens(c.brightness_contrast_p, g):
            limit = c.brightness_contrast
            image = (image * _uniform(1 - limit, 1 + limit, g) + _uniform(-limit, limit, g)).clamp(
                0, 1
            )
        if _happens(c.gamma_p, g):
            image = image.pow(_uniform(*c.gamma, g))
        if _happens(c.noise_p, g):
            std = math.sqrt(_uniform(*c.noise_variance, g)) / 255
            image = (image + torch.randn(image.shape, generator=g) * std).clamp(0, 1)
        if _happens(c.motion_blur_p, g):
            image = motion_blur(image, int(torch.randint(4, (), generator=g)))
        return image, boxes, labels
