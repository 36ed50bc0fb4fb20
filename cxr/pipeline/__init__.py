"""The experiment's stages and presets, its results read back, and the report's charts."""
