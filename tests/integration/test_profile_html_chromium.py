"""The HTML report in headless Chromium (Debian's chromium): the charts render, offline; writes the screenshot
docs/profile_report.png when EDGESDK_WRITE_SCREENSHOT=1 (of a real model's profile, made by the caller)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

pytestmark = pytest.mark.integration
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--window-size=1400,1000"]


def chromium(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="edgesdk-chromium-") as prof:
        return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={prof}", *args], capture_output=True, text=True,
                              timeout=timeout, check=False)


@pytest.fixture(scope="module", autouse=True)
def _need_chromium():
    if not Path(CHROMIUM).is_file():
        reason = "Debian's chromium is not installed (apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)


def test_html_report_renders_charts_offline(tmp_path):
    from sshd_fixture import make_test_bundle

    from edgesdk.profile import ProfileOptions, profile

    b = make_test_bundle(tmp_path / "b")
    rep = profile(b, "rpi4", "local", ProfileOptions(runs=30, warmup=2, per_layer=True, layer_runs=3, frames=10))
    html = rep.write_html(tmp_path / "report.html")
    text = html.read_text()
    assert not re.search(r"""(src|href)=["']?https?:""", text)  # nothing to fetch
    r = chromium(["--dump-dom", html.as_uri()])
    assert r.returncode == 0, r.stderr[-2000:]
    dom = r.stdout
    rendered = re.findall(r'data-rendered="(\d+) bars (\d+)x(\d+)"', dom)
    assert len(rendered) == 3, dom[:2000]  # histogram, top layers, timeline: laid out with non-empty bars
    assert all(int(n) > 0 and int(w) > 100 and int(h) > 50 for n, w, h in rendered)
    assert 'data-charts="3"' in dom
    shot = tmp_path / "shot.png"
    r = chromium([f"--screenshot={shot}", html.as_uri()])
    assert shot.is_file() and shot.stat().st_size > 10_000, r.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_committed_screenshot_exists():
    p = Path(__file__).resolve().parents[2] / "docs" / "profile_report.png"
    if os.environ.get("EDGESDK_WRITE_SCREENSHOT") == "1":
        src = Path(os.environ["EDGESDK_REPORT_HTML"])
        r = chromium([f"--screenshot={p}", "--window-size=1400,1500", src.resolve().as_uri()])
        assert r.returncode == 0, r.stderr[-2000:]
    assert p.is_file() and p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
