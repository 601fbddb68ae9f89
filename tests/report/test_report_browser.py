"""The report in a real browser: headless Chromium opens index.html from disk, takes a
screenshot, and must log no console error; the screenshot must not be blank.

Chromium is the Debian package `chromium` (installed by .ci/run). Without it the test is
skipped on a laptop and fails under CI (CI set), so a CI image without it cannot pass.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import matplotlib.image as mpimg
import pytest

from tests.report.test_report import smoke_report_index

CHROMIUM = Path("/usr/bin/chromium")

# Flags: no sandbox (containers run as root), no GPU, and nothing that would reach the
# network on its own (QUIC, component updates, sync, background fetches).
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-logging=stderr",
    "--v=0",
    "--hide-scrollbars",
]

# What Chromium writes to stderr for page problems: console messages from the page
# ("CONSOLE(...)"), uncaught exceptions, and resources that failed to load.
PAGE_ERROR = re.compile(
    r"CONSOLE|Uncaught|ERR_FILE_NOT_FOUND|Failed to load resource|Not allowed to load", re.I
)


@pytest.fixture(scope="module")
def chromium() -> Path:
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: .ci/run installs the Debian package `chromium`")
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    return CHROMIUM


def screenshot(chromium: Path, page: Path, tmp_path: Path, size: str = "1400,4000") -> tuple[Path, list[str]]:
    """Open `page` from disk headless; return the screenshot and the stderr lines that
    report a page problem."""
    shot = tmp_path / "shot.png"
    profile = tmp_path / "profile"  # a new, empty profile: no state from earlier runs
    profile.mkdir()
    proc = subprocess.run(
        [
            str(chromium),
            *FLAGS,
            f"--user-data-dir={profile}",
            f"--screenshot={shot}",
            f"--window-size={size}",
            page.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert shot.is_file(), f"no screenshot (exit {proc.returncode}): {proc.stderr[-2000:]}"
    return shot, [line for line in proc.stderr.splitlines() if PAGE_ERROR.search(line)]


def test_console_errors_are_detected(chromium, tmp_path):
    # The check below is only worth something if a page with an error does trip it.
    page = tmp_path / "bad.html"
    page.write_text("<html><body>x<script>console.error('boom'); undefined_fn();</script></body></html>")
    _, errors = screenshot(chromium, page, tmp_path, "300,200")
    assert any("boom" in e for e in errors) and any("Uncaught" in e for e in errors)


def test_chromium_renders_report_without_console_errors(chromium, tmp_path_factory, tmp_path):
    index = smoke_report_index(tmp_path_factory)
    shot, errors = screenshot(chromium, index, tmp_path)
    assert not errors, "\n".join(errors)

    img = mpimg.imread(shot)[..., :3]
    assert img.shape[0] == 4000 and img.shape[1] == 1400
    # Not blank: a white page has std 0; text, tables and figures give a clear spread.
    assert float(img.std()) > 0.05
    # The figures reached the screen: a blank page or broken images would leave no
    # saturated colour (text and tables are grey).
    saturation = img.max(axis=2) - img.min(axis=2)
    assert float((saturation > 0.3).mean()) > 0.01
