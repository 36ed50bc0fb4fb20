"""What SimCLR and the detector share: ResNet trunks, global BatchNorm, optimizers and
schedules, random streams."""
