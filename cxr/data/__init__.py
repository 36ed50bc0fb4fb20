"""The input formats (VinBigData, NIH, COCO), Weighted Boxes Fusion, the seeded splits,
image names and files, datasets, and the SSL pool."""
