"""kfp-ct components: KFP v2 components for continuous training of TensorFlow models."""

# The one place the version lives: pyproject reads it, image tags derive from it.
__version__ = "0.1.0"
