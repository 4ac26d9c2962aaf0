"""Draws an HTML report in Debian's headless chromium and reads the pixels back.

The reports are dsl.HTML artifacts the Kubeflow UI shows: these checks prove that their
inline SVG really draws, not only that the markup parses.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest


def screenshot(html_path: str, png_path: str, tmp_path, size: tuple[int, int] = (1400, 1400)):
    """``chromium --headless --screenshot`` of the file; fails the test without chromium."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.fail("Debian's chromium is needed to check that reports draw: `make test` "
                    "installs it (apt-get install chromium)")
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", f"--user-data-dir={tmp_path / 'chromium-profile'}",
           f"--window-size={size[0]},{size[1]}", f"--screenshot={png_path}",
           f"file://{html_path}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and os.path.exists(png_path), proc.stderr[-2000:]


def pixels(png_path: str):
    """The screenshot as an (height, width, 3) int array."""
    import numpy as np
    from PIL import Image

    return np.asarray(Image.open(png_path).convert("RGB")).astype(int)


def near(image, rgb, tolerance: int = 12):
    """Boolean mask of the pixels within ``tolerance`` (sum of channel differences)."""
    import numpy as np

    return np.abs(image - np.asarray(rgb)).sum(axis=-1) < tolerance


def count(image, rgb, tolerance: int = 12) -> int:
    return int(near(image, rgb, tolerance).sum())
