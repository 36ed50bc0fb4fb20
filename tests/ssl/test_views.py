"""Each SSL view transform against its contract."""

import math

import pytest
import torch

from cxr.ssl.views import (
    ViewConfig,
    affine_resample,
    brightness_contrast,
    equalize,
    flip,
    gaussian_blur,
    gaussian_noise,
    random_gamma,
    random_resized_crop,
    simclr_views,
)


def batch(n=4, size=32, seed=0):
    return torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(seed))


def test_identity_affine_reproduces_the_image():
    x = batch()
    n = x.shape[0]
    ones, zeros = torch.ones(n), torch.zeros(n)
    torch.testing.assert_close(
        affine_resample(x, scale=(ones, ones), centre=(zeros, zeros), angle=zeros, out_size=32),
        x,
        atol=1e-5,
        rtol=0,
    )


def test_crop_at_full_scale_without_rotation_is_identity():
    x = batch()
    out = random_resized_crop(
        x,
        32,
        scale=(1.0, 1.0),
        ratio=(1.0, 1.0),
        degrees=0.0,
        generator=torch.Generator().manual_seed(1),
    )
    torch.testing.assert_close(out, x, atol=1e-5, rtol=0)


def test_crop_takes_the_expected_region():
    # A half-width, half-height crop centred on the top-left quadrant's centre
    # equals the quadrant itself, upsampled 2x; on a piecewise-constant image the
    # constant regions survive exactly.
    x = torch.zeros(1, 1, 32, 32)
    x[..., :16, :16] = 1.0
    half, centre = torch.tensor([0.5]), torch.tensor([-0.5])
    out = affine_resample(
        x, scale=(half, half), centre=(centre, centre), angle=torch.zeros(1), out_size=32
    )
    assert out[..., 2:-2, 2:-2].min() == pytest.approx(1.0, abs=1e-5)


def crop_boxes(count, scale, ratio, seed=0):
    """(centre x, centre y, width, height) of `count` crops, in [0, 1] image units, read
    off the crops of two ramps (each pixel's value: its x, or its y)."""
    side = 64
    ramp = (torch.arange(side) + 0.5) / side
    x_ramp, y_ramp = ramp.expand(side, side), ramp.view(-1, 1).expand(side, side)
    images = torch.stack([x_ramp, y_ramp]).unsqueeze(0).expand(count, 2, side, side)
    out = random_resized_crop(
        images,
        16,
        scale=scale,
        ratio=ratio,
        degrees=0.0,
        generator=torch.Generator().manual_seed(seed),
    )
    xs, ys = out[:, 0], out[:, 1]
    width = (xs[:, :, -1] - xs[:, :, 0]).mean(1) * 16 / 15  # the first and last columns' centres
    height = (ys[:, -1, :] - ys[:, 0, :]).mean(1) * 16 / 15
    return xs.mean((1, 2)), ys.mean((1, 2)), width, height


def test_crop_centres_fall_anywhere_the_crop_fits():
    """Small crops (a tenth of the area): centres over the whole free range on both
    axes, either side of the middle alike."""
    cx, cy, width, height = crop_boxes(2000, scale=(0.1, 0.1), ratio=(1.0, 1.0))
    for centre, size in ((cx, width), (cy, height)):
        free = (1 - size) / 2  # how far the centre may lie from the middle
        offset = (centre - 0.5) / free
        assert offset.min() > -1.01 and offset.max() < 1.01
        assert (offset < -0.8).float().mean() > 0.05 and (offset > 0.8).float().mean() > 0.05
        assert offset.mean().abs() < 0.05  # uniform on [-1, 1]: standard error 0.013


def test_crop_aspect_ratios_are_log_uniform_in_the_range_and_areas_in_the_scale():
    _, _, width, height = crop_boxes(2000, scale=(0.2, 0.5), ratio=(3 / 4, 4 / 3), seed=1)
    log_ratio = torch.log(width / height)
    bound = math.log(4 / 3)
    assert log_ratio.min() > -bound - 0.02 and log_ratio.max() < bound + 0.02
    assert (log_ratio < -0.8 * bound).float().mean() > 0.05  # not square: both ways
    assert (log_ratio > 0.8 * bound).float().mean() > 0.05
    area = width * height
    assert area.min() > 0.2 - 0.01 and area.max() < 0.5 + 0.01
    assert area.mean() == pytest.approx(0.35, abs=0.01)  # uniform on [0.2, 0.5]


def test_rotation_by_90_degrees_matches_rot90():
    x = batch(n=1)
    one, zero = torch.ones(1), torch.zeros(1)
    quarter = torch.tensor([math.pi / 2])
    out = affine_resample(x, scale=(one, one), centre=(zero, zero), angle=quarter, out_size=32)
    # x_in = -y_out, y_in = x_out, i.e. out[i, j] = in[j, W - 1 - i]
    torch.testing.assert_close(out, torch.rot90(x, k=1, dims=(-2, -1)), atol=1e-5, rtol=0)


def test_flip_twice_is_identity_and_only_masked_images_flip():
    x = batch()
    mask_h, mask_v = (
        torch.tensor([True, False, True, False]),
        torch.tensor([True, True, False, False]),
    )
    once = flip(x, mask_h, mask_v)
    torch.testing.assert_close(flip(once, mask_h, mask_v), x, atol=0, rtol=0)
    torch.testing.assert_close(once[3], x[3], atol=0, rtol=0)
    torch.testing.assert_close(once[0], x[0].flip(-1).flip(-2), atol=0, rtol=0)
    torch.testing.assert_close(once[2], x[2].flip(-1), atol=0, rtol=0)


def test_brightness_contrast_identity_and_formula():
    x = batch()
    ones = torch.ones(4)
    torch.testing.assert_close(brightness_contrast(x, ones, ones), x)
    out = brightness_contrast(
        x * 0.5, ones, torch.zeros(4)
    )  # contrast 0: every pixel becomes the mean
    torch.testing.assert_close(out, (x * 0.5).mean(dim=(1, 2, 3), keepdim=True).expand_as(x))


def test_equalized_histogram_is_flat():
    # A skewed image: level k of 256 covers (256 - k) pixels, so dark dominates
    # but no single level holds more than 1% of the pixels.
    levels = torch.repeat_interleave(torch.arange(256), 256 - torch.arange(256))
    x = (levels / 255).view(1, 1, 1, -1)
    assert (
        torch.histc(x, bins=8, min=0, max=1).max() > 3 * torch.histc(x, bins=8, min=0, max=1).min()
    )
    out = equalize(x)
    counts = torch.histc(out, bins=8, min=0, max=1)
    assert counts.min() / counts.max() > 0.8
    assert out.min() == 0 and out.max() == 1


def test_equalize_keeps_single_level_images_and_order_of_levels():
    flat = torch.full((1, 1, 8, 8), 0.3)
    torch.testing.assert_close(equalize(flat), flat)
    x = batch(n=1)
    out = equalize(x)
    order = torch.argsort(x.flatten())
    assert (out.flatten()[order].diff() >= 0).all()  # monotone mapping


def test_blur_preserves_constants_and_tiny_sigma_is_identity():
    x = batch()
    torch.testing.assert_close(gaussian_blur(x, torch.full((4,), 0.1)), x, atol=1e-6, rtol=0)
    constant = torch.full((2, 1, 16, 16), 0.7)
    torch.testing.assert_close(gaussian_blur(constant, torch.tensor([1.0, 2.0])), constant)


def test_blur_of_an_impulse_is_the_sampled_gaussian():
    x = torch.zeros(1, 1, 21, 21)
    x[..., 10, 10] = 1.0
    out = gaussian_blur(x, torch.tensor([1.5]), radius=5)
    g = torch.exp(-(torch.arange(-5, 6.0) ** 2) / (2 * 1.5**2))
    g = g / g.sum()
    torch.testing.assert_close(out[0, 0, 5:16, 5:16], torch.outer(g, g), atol=1e-7, rtol=1e-5)


def test_noise_zero_std_is_identity():
    x = batch()
    torch.testing.assert_close(gaussian_noise(x, torch.zeros(4), torch.Generator()), x)


def test_views_shape_range_determinism_and_no_in_place_change():
    images = (batch(n=6, size=48) * 255).to(torch.uint8)
    copy = images.clone()
    v1, v2 = simclr_views(images, 32, ViewConfig(), torch.Generator().manual_seed(3))
    assert v1.shape == v2.shape == (6, 1, 32, 32)
    assert v1.min() >= 0 and v1.max() <= 1 and not torch.equal(v1, v2)
    w1, w2 = simclr_views(images, 32, ViewConfig(), torch.Generator().manual_seed(3))
    assert torch.equal(v1, w1) and torch.equal(v2, w2)
    assert torch.equal(images, copy)


def test_gamma_keeps_the_ends_is_identity_at_one_and_follows_the_formula():
    x = torch.tensor([0.0, 0.25, 0.5, 1.0]).view(1, 1, 2, 2).repeat(2, 1, 1, 1)
    out = random_gamma(x, torch.tensor([1.0, 2.0]))
    torch.testing.assert_close(out[0], x[0], atol=0, rtol=0)
    torch.testing.assert_close(out[1].flatten(), torch.tensor([0.0, 0.0625, 0.25, 1.0]))


@pytest.mark.parametrize("crop_scale", [(0.0, 0.5), (-0.1, 1.0), (0.6, 0.5)])
def test_a_range_needs_a_positive_low_end_not_above_the_high_end(crop_scale):
    with pytest.raises(ValueError, match="crop_scale must be two numbers 0 < low <= high"):
        ViewConfig(crop_scale=crop_scale).check()
