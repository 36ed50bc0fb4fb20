"""COCO mAP and the competition's metric, the linear probe, paired bootstrap intervals,
the location prior and chance, pictures and the submission."""
