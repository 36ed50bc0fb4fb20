"""SimCLR (Chen et al., 2020): the model, NT-Xent and the views."""
