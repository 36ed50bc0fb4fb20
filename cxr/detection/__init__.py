"""Faster R-CNN (Ren et al., 2015) from a ResNet trunk, box-aware augmentation, and
repeat-factor sampling (Gupta et al., 2019)."""
