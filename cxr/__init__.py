"""cxr: self-supervised chest X-ray lesion detection in pure PyTorch.

SimCLR pretraining of a ResNet trunk on unlabeled VinBigData chest X-rays,
a linear probe to gauge the features, and Faster R-CNN fine-tuning on the
labeled rest, measured with COCO mAP. Data preparation (`cxr.prepare`,
`cxr.synthetic`, `cxr.data.wbf`) needs only numpy and Pillow.
"""
