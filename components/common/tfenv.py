"""Process setup that must happen before TensorFlow is imported anywhere."""

import os

# TFT and TFMA work with Keras 2 only (see shared/DESIGN.md).
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
