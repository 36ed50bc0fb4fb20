"""The machinery of a command: output folders and locks, run folders and checkpoints,
command-line types, torchrun set-up, progress lines, user errors."""
