"""Headless Chromium (Debian's chromium): load a local HTML file, return its DOM and save a screenshot."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def render(html: Path, png: Path, size: str = "1200,1800") -> str:
    """Screenshot ``html`` into ``png``; returns the DOM Chromium built (proof the page loaded)."""
    exe = chromium()
    assert exe, "chromium not installed (make deps installs it)"
    with tempfile.TemporaryDirectory(prefix="tsalign-chromium-") as prof:
        base = [exe, *FLAGS, f"--user-data-dir={prof}", f"--window-size={size}"]
        subprocess.run([*base, f"--screenshot={png}", html.resolve().as_uri()], capture_output=True, timeout=120, check=True)
        dom = subprocess.run([*base, "--dump-dom", html.resolve().as_uri()], capture_output=True, text=True, timeout=120,
                             check=True).stdout
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, "chromium wrote no real screenshot"
    return dom
