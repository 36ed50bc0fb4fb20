"""SimCLR views of a batch of grayscale X-rays, computed on the batch's device.

The data loader only decodes images (uint8, one channel, a fixed size); the
random views are made here, on the GPU when training runs there, with one
set of random parameters per image drawn from an explicit torch.Generator
(reseeded per epoch and rank, so runs and resumed runs are reproducible).

The transforms follow SimCLR (Chen et al., 2020) adapted to radiographs as the
seed project did: random resized crop (scale 0.2-1, aspect 3/4-4/3) with a
small rotation, both in one affine resampling; horizontal and vertical flips;
brightness/contrast jitter (p=0.8) instead of colour jitter; histogram
equalization; Gaussian blur (sigma 0.1-2 px, p=0.5); Gaussian noise. Every
transform takes and returns float images in [0, 1] of shape (B, 1, H, W) and
never modifies its input.
"""

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F


@dataclass
class ViewConfig:
    """Strengths and probabilities of the SSL view transforms (defaults: the simclr preset)."""

    crop_scale: tuple = (0.2, 1.0)
    crop_ratio: tuple = (3 / 4, 4 / 3)
    rotation_degrees: float = 10.0
    hflip_p: float = 0.5
    vflip_p: float = 0.5
    jitter_p: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    gamma_p: float = 0.0  # not in SimCLR's views
    gamma_std: float = 0.2  # gamma = exp(N(0, gamma_std))
    equalize_p: float = 0.2
    blur_p: float = 0.5
    blur_sigma: tuple = (0.1, 2.0)
    noise_p: float = 0.5
    noise_std: float = 0.03

    def to_dict(self):
        return asdict(self)

    def check(self):
        """Raise ValueError naming the first field a view cannot be drawn with."""
        for name, value in asdict(self).items():
            pair = isinstance(value, tuple)
            numbers = value if pair else (value,)
            if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in numbers):
                raise ValueError(f"{name} must be {'two numbers' if pair else 'a number'}")
            if pair and (len(value) != 2 or not 0 < value[0] <= value[1]):
                raise ValueError(f"{name} must be two numbers 0 < low <= high, got {list(value)}")
            if name.endswith("_p") and not 0 <= value <= 1:
                raise ValueError(f"{name} is a probability: give a number in [0, 1]")
            if not pair and value < 0:
                raise ValueError(f"{name} must not be negative")
        if self.crop_scale[1] > 1 or max(self.brightness, self.contrast) >= 1:
            raise ValueError("crop_scale may not exceed 1, brightness and contrast must be < 1")


# "simclr": SimCLR's views for grayscale images as the seed project set them
# (the defaults above).
# "cxr": radiograph-specific views in the spirit of MoCo-CXR (Sowrirajan et
# al., 2021): no vertical flip (anatomy has an up), no intensity jitter or
# equalization (intensity is diagnostic), milder crops. On the synthetic data
# "simclr" views leave the SimCLR loss at chance for the first epochs of a
# CPU run, mostly because of the intensity jitter (docs/experiments.md).
VIEW_PRESETS = {
    "simclr": ViewConfig(),
    "cxr": ViewConfig(crop_scale=(0.35, 1.0), vflip_p=0.0, jitter_p=0.0, equalize_p=0.0),
}


def _uniform(low, high, n, generator, device):
    return low + (high - low) * torch.rand(n, generator=generator, device=device)


def _chance(p, n, generator, device):
    return torch.rand(n, generator=generator, device=device) < p


def _per_image(mask):
    return mask.view(-1, 1, 1, 1)


def _where_chosen(chosen, images, transform):
    """transform(images[index], index) in place of the chosen images, the others
    unchanged. Only the chosen images are computed, which matters on a CPU
    where a p=0.5 transform would otherwise do twice the work (on a GPU it
    costs one host sync for the index)."""
    index = chosen.nonzero().squeeze(1)
    if index.numel() == 0:
        return images
    return images.index_copy(0, index, transform(images[index], index))


def affine_resample(images, *, scale, centre, angle, out_size):
    """Resample each image through x_in = R(angle) diag(scale) x_out + centre,
    in normalized [-1, 1] coordinates (bilinear, zeros outside).

    images (B, C, H, W); scale and centre: (x, y) pairs of (B,) tensors, angle
    (B,) in radians; returns (B, C, out_size, out_size). Scale 1, centre 0,
    angle 0 is the identity; scale < 1 crops."""
    (scale_x, scale_y), (centre_x, centre_y) = scale, centre
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack(
        [
            torch.stack([cos * scale_x, -sin * scale_y, centre_x], 1),
            torch.stack([sin * scale_x, cos * scale_y, centre_y], 1),
        ],
        1,
    )
    grid = F.affine_grid(
        theta.to(images.dtype),
        (images.shape[0], images.shape[1], out_size, out_size),
        align_corners=False,
    )
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def random_resized_crop(images, out_size, *, scale, ratio, degrees, generator):
    """Crop a random area share in `scale` with aspect in `ratio` (log-uniform),
    rotated by up to +-degrees, resized to out_size, as torchvision's
    RandomResizedCrop followed by RandomRotation but in one resampling."""
    n, device = images.shape[0], images.device
    area = _uniform(scale[0], scale[1], n, generator, device)
    log_ratio = _uniform(math.log(ratio[0]), math.log(ratio[1]), n, generator, device)
    aspect = torch.exp(log_ratio)
    width = torch.sqrt(area * aspect).clamp(max=1.0)
    height = torch.sqrt(area / aspect).clamp(max=1.0)
    centre_x = (1 - width) * _uniform(-1, 1, n, generator, device)
    centre_y = (1 - height) * _uniform(-1, 1, n, generator, device)
    angle = torch.deg2rad(_uniform(-degrees, degrees, n, generator, device))
    return affine_resample(
        images, scale=(width, height), centre=(centre_x, centre_y), angle=angle, out_size=out_size
    )


def flip(images, horizontal, vertical):
    """Flip the images whose boolean mask entry is set (left-right, up-down)."""
    images = _where_chosen(horizontal, images, lambda chosen, _: chosen.flip(-1))
    return _where_chosen(vertical, images, lambda chosen, _: chosen.flip(-2))


def brightness_contrast(images, brightness, contrast):
    """x * brightness, then blend with the image mean by contrast, clamped to [0, 1]."""
    images = images * brightness.view(-1, 1, 1, 1)
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    return ((images - mean) * contrast.view(-1, 1, 1, 1) + mean).clamp(0, 1)


def random_gamma(images, gamma):
    """x ** gamma per image: a monotone change of exposure that keeps 0 and 1,
    the image-wide intensity variation between radiographs."""
    return images.clamp(min=0).pow(gamma.view(-1, 1, 1, 1))


def equalize(images, bins=256):
    """Histogram equalization per image on 256 levels, as PIL's
    ImageOps.equalize without its integer rounding: each level maps to the
    share of pixels below it among those not at the brightest level, so the
    output histogram is as flat as the input's distinct levels allow.
    A single-level image is returned unchanged."""
    n = images.shape[0]
    levels = (images * (bins - 1)).round().long().view(n, -1)
    counts = torch.zeros(n, bins, device=images.device)
    counts.scatter_add_(1, levels, torch.ones_like(levels, dtype=counts.dtype))
    below = torch.cumsum(counts, 1) - counts
    not_brightest = levels.shape[1] - counts.gather(1, levels.max(1, keepdim=True).values)
    mapped = (below / not_brightest.clamp(min=1)).gather(1, levels).view_as(images)
    single_level = levels.max(1).values == levels.min(1).values
    return torch.where(_per_image(single_level), images, mapped.to(images.dtype))


def gaussian_blur(images, sigma, radius=None):
    """Separable Gaussian blur with a per-image sigma (pixels), reflect padding."""
    radius = radius or max(1, math.ceil(3 * float(sigma.max())))
    offsets = torch.arange(-radius, radius + 1, device=images.device, dtype=images.dtype)
    kernels = torch.exp(-(offsets**2) / (2 * sigma.view(-1, 1).to(images.dtype) ** 2))
    kernels = kernels / kernels.sum(1, keepdim=True)  # (B, K)
    n, c, h, w = images.shape
    x = images.reshape(1, n * c, h, w)
    weights = kernels.repeat_interleave(c, 0)
    x = F.conv2d(
        F.pad(x, (radius, radius, 0, 0), mode="reflect"),
        weights.view(n * c, 1, 1, -1),
        groups=n * c,
    )
    x = F.conv2d(
        F.pad(x, (0, 0, radius, radius), mode="reflect"),
        weights.view(n * c, 1, -1, 1),
        groups=n * c,
    )
    return x.view(n, c, h, w)


def gaussian_noise(images, std, generator):
    noise = torch.randn(images.shape, generator=generator, device=images.device, dtype=images.dtype)
    return (images + noise * std.view(-1, 1, 1, 1)).clamp(0, 1)


def simclr_view(images, out_size, config, generator):
    """One random view of each image: (B, 1, H, W) in [0, 1] -> (B, 1, out, out)."""
    n, device = images.shape[0], images.device
    x = random_resized_crop(
        images,
        out_size,
        scale=config.crop_scale,
        ratio=config.crop_ratio,
        degrees=config.rotation_degrees,
        generator=generator,
    )
    x = flip(
        x,
        _chance(config.hflip_p, n, generator, device),
        _chance(config.vflip_p, n, generator, device),
    )
    jitter = _chance(config.jitter_p, n, generator, device)
    brightness = _uniform(1 - config.brightness, 1 + config.brightness, n, generator, device)
    contrast = _uniform(1 - config.contrast, 1 + config.contrast, n, generator, device)
    x = _where_chosen(
        jitter, x, lambda chosen, i: brightness_contrast(chosen, brightness[i], contrast[i])
    )
    gamma = torch.exp(config.gamma_std * torch.randn(n, generator=generator, device=device))
    x = _where_chosen(
        _chance(config.gamma_p, n, generator, device),
        x,
        lambda chosen, i: random_gamma(chosen, gamma[i]),
    )
    x = _where_chosen(
        _chance(config.equalize_p, n, generator, device), x, lambda chosen, _: equalize(chosen)
    )
    blur = _chance(config.blur_p, n, generator, device)
    sigma = _uniform(*config.blur_sigma, n, generator, device)
    radius = math.ceil(3 * config.blur_sigma[1])
    x = _where_chosen(blur, x, lambda chosen, i: gaussian_blur(chosen, sigma[i], radius=radius))
    noisy = _chance(config.noise_p, n, generator, device)
    std = torch.full((n,), config.noise_std, device=device, dtype=x.dtype)
    return _where_chosen(noisy, x, lambda chosen, i: gaussian_noise(chosen, std[i], generator))


def simclr_views(images, out_size, config, generator):
    """Two independent views of a uint8 or float batch (B, 1, H, W)."""
    if images.dtype == torch.uint8:
        images = images.float() / 255
    return simclr_view(images, out_size, config, generator), simclr_view(
        images, out_size, config, generator
    )
