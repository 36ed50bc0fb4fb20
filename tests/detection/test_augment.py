"""Box-aware detection transforms: geometry of boxes follows geometry of pixels."""

import pytest
import torch

from cxr.detection.augment import (
    BoxAugment,
    BoxAugmentConfig,
    clip_and_filter,
    hflip,
    motion_blur,
    shift_scale_rotate,
)


def rectangle_image(box, size=(96, 128)):
    image = torch.zeros(1, *size)
    x0, y0, x1, y1 = box
    image[:, y0:y1, x0:x1] = 1.0
    return image


def pixel_bounds(image, threshold=0.5):
    ys, xs = torch.nonzero(image[0] > threshold, as_tuple=True)
    return torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=torch.float32)


def test_flip_twice_is_identity_for_image_and_boxes():
    image = torch.rand(1, 20, 30)
    boxes = torch.tensor([[2.0, 3.0, 10.0, 8.0], [15.5, 0.0, 30.0, 20.0]])
    once_image, once_boxes = hflip(image, boxes)
    assert torch.equal(once_boxes[0], torch.tensor([20.0, 3.0, 28.0, 8.0]))
    twice_image, twice_boxes = hflip(once_image, once_boxes)
    assert torch.equal(twice_image, image) and torch.equal(twice_boxes, boxes)


def test_zero_shift_scale_rotate_is_identity():
    image = torch.rand(1, 24, 40)
    boxes = torch.tensor([[1.0, 2.0, 30.0, 20.0]])
    warped, moved = shift_scale_rotate(image, boxes, shift=(0.0, 0.0), scale=1.0, degrees=0.0)
    torch.testing.assert_close(warped, image, atol=1e-5, rtol=0)
    torch.testing.assert_close(moved, boxes)


@pytest.mark.parametrize(
    "shift_x, shift_y, scale, degrees",
    [
        (0.0625, -0.05, 1.0, 0.0),
        (0.0, 0.0, 1.1, 0.0),
        (0.0, 0.0, 0.9, 0.0),
        (0.0, 0.0, 1.0, 10.0),
        (-0.04, 0.03, 1.08, -9.0),
        (0.0, 0.0, 1.0, 90.0),
    ],
)
def test_box_of_a_filled_rectangle_follows_the_rectangle(shift_x, shift_y, scale, degrees):
    box = (40, 30, 80, 60)
    image = rectangle_image(box)
    warped, moved = shift_scale_rotate(
        image,
        torch.tensor([box], dtype=torch.float32),
        shift=(shift_x, shift_y),
        scale=scale,
        degrees=degrees,
    )
    # The pixels' bounds are inside the box's transformed corners' bounds, within resampling blur.
    torch.testing.assert_close(pixel_bounds(warped), moved[0], atol=1.5, rtol=0)


def test_ninety_degrees_rotates_counter_clockwise_on_screen():
    image = rectangle_image((70, 10, 90, 30), size=(100, 100))  # near the top right
    warped, moved = shift_scale_rotate(
        image, torch.tensor([[70.0, 10.0, 90.0, 30.0]]), shift=(0, 0), scale=1.0, degrees=90.0
    )
    torch.testing.assert_close(
        moved[0], torch.tensor([10.0, 10.0, 30.0, 30.0]), atol=1e-4, rtol=0
    )  # top left
    torch.testing.assert_close(pixel_bounds(warped), moved[0], atol=1.0, rtol=0)


def test_clip_and_filter_drops_small_and_mostly_outside_boxes_with_labels():
    boxes = torch.tensor(
        [
            [-30.0, 0.0, 10.0, 10.0],  # 25% visible -> dropped
            [-5.0, 0.0, 15.0, 10.0],  # 75% visible -> clipped, kept
            [5.0, 5.0, 8.0, 10.0],  # 15 px^2 -> dropped
            [0.0, 0.0, 4.0, 4.0],
        ]
    )  # 16 px^2 -> kept
    kept, labels = clip_and_filter(
        boxes, torch.tensor([1, 2, 3, 4]), size=(50, 50), min_area=16.0, min_visibility=0.3
    )
    assert labels.tolist() == [2, 4]
    assert kept.tolist() == [[0.0, 0.0, 15.0, 10.0], [0.0, 0.0, 4.0, 4.0]]


def test_motion_blur_preserves_constants_and_smears_along_its_line():
    constant = torch.full((1, 5, 5), 0.4)
    torch.testing.assert_close(motion_blur(constant, 2), constant)
    dot = torch.zeros(1, 5, 5)
    dot[0, 2, 2] = 1.0
    horizontal = motion_blur(dot, 0)
    assert torch.nonzero(horizontal[0]).tolist() == [[2, 1], [2, 2], [2, 3]]


def test_pipeline_keeps_boxes_inside_and_inputs_untouched():
    generator = torch.Generator().manual_seed(0)
    augment = BoxAugment(
        BoxAugmentConfig(
            geometric_p=1.0,
            hflip_p=0.5,
            brightness_contrast_p=1.0,
            gamma_p=1.0,
            noise_p=1.0,
            motion_blur_p=1.0,
        )
    )
    image = torch.rand(1, 64, 80)
    boxes = torch.tensor(
        [[0.0, 0.0, 20.0, 20.0], [50.0, 30.0, 80.0, 64.0], [30.0, 20.0, 45.0, 40.0]]
    )
    labels = torch.tensor([1, 5, 9])
    copies = image.clone(), boxes.clone(), labels.clone()
    for _ in range(50):
        out_image, out_boxes, out_labels = augment(image, boxes, labels, generator)
        assert out_image.shape == image.shape and 0 <= out_image.min() and out_image.max() <= 1
        assert len(out_boxes) == len(out_labels) <= 3
        assert (
            (out_boxes[:, :2] >= 0).all()
            and (out_boxes[:, 2] <= 80).all()
            and (out_boxes[:, 3] <= 64).all()
        )
        assert (out_boxes[:, 2:] > out_boxes[:, :2]).all()
    assert all(torch.equal(a, b) for a, b in zip((image, boxes, labels), copies))


def test_draws_come_from_the_generator_passed_in():
    """Same seed, same result, whatever torch's global generator does; another seed differs."""
    augment = BoxAugment(BoxAugmentConfig(geometric_p=1.0, noise_p=1.0))
    image, boxes, labels = (
        torch.rand(1, 32, 32),
        torch.tensor([[4.0, 4.0, 20.0, 20.0]]),
        torch.tensor([2]),
    )
    torch.manual_seed(1)
    first = augment(image, boxes, labels, torch.Generator().manual_seed(5))
    torch.manual_seed(2)
    again = augment(image, boxes, labels, torch.Generator().manual_seed(5))
    other = augment(image, boxes, labels, torch.Generator().manual_seed(6))
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[0], other[0])


def generator(seed):
    return torch.Generator().manual_seed(seed)


def only(**switched_on):
    """A config with every random step off but those given."""
    off = dict(geometric_p=0, hflip_p=0, brightness_contrast_p=0, gamma_p=0, noise_p=0)
    return BoxAugmentConfig(**{**off, "motion_blur_p": 0, **switched_on})


def test_the_scale_is_drawn_around_one_within_its_range():
    """A centred box under scaling alone: its width ratio spans [1 - s, 1 + s]."""
    augment = BoxAugment(only(geometric_p=1, shift=0.0, rotate_degrees=0.0, scale=0.1))
    box = torch.tensor([[40.0, 40.0, 60.0, 60.0]])
    ratios = []
    for seed in range(200):
        _, boxes, _ = augment(torch.zeros(1, 100, 100), box, torch.tensor([1]), generator(seed))
        ratios.append(float(boxes[0, 2] - boxes[0, 0]) / 20)
    assert 0.9 - 1e-4 <= min(ratios) < 0.92 and 1.08 < max(ratios) <= 1.1 + 1e-4


def test_brightness_and_contrast_are_drawn_around_no_change():
    """A grey image under brightness and contrast alone: gain in [1 - l, 1 + l], offset in
    [-l, l], so its mean over many draws stays near the grey it was."""
    augment = BoxAugment(only(brightness_contrast_p=1, brightness_contrast=0.15))
    grey = torch.full((1, 8, 8), 0.5)
    values = [
        float(augment(grey, torch.zeros(0, 4), torch.zeros(0), generator(seed))[0].mean())
        for seed in range(400)
    ]
    assert abs(sum(values) / len(values) - 0.5) < 0.02
    assert 0.5 * 0.85 - 0.15 - 1e-6 <= min(values) and max(values) <= 0.5 * 1.15 + 0.15 + 1e-6
