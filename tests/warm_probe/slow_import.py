"""A module that takes a long time to import, as TensorFlow does (tests/test_warm.py)."""

import time

time.sleep(30)
