"""COCO mAP and the competition's metric, the linear probe, intervals over seeds and images,
the location prior and chance, pictures and the submission."""
