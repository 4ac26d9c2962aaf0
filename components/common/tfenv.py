"""Process setup that must happen before TensorFlow is imported anywhere."""

import os

# TFT and TFMA work with Keras 2 only (see shared/DESIGN.md).
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

#: Set by a local warm run (pipelines/entrypoints/warm.py) to its launcher: a task's own
#: fresh-process checks (push's serving check) start through it too, as forks of a
#: process that has imported TensorFlow once, instead of importing it again.
WARM_LAUNCHER_ENV = "KFP_CT_WARM_PYTHON"
