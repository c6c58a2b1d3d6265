"""The HTML report in a real browser: every image loads, no console errors, a screenshot.

Headless Chromium with networking features off opens a copy of the report into which a small
probe script is injected first thing in <head>: it records console errors and failed resource
loads, and after the load event writes the number of images and the broken ones into the DOM,
which `--dump-dom` prints. Outside CI the test skips when Chromium is absent; in CI (CI=true)
`.ci/run` installs it and the test must run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from html import unescape
from pathlib import Path

import pytest
from reports_support import fake_fit

from detailed_balance.diagnostics import bayes_verdict
from detailed_balance.workflow import build_report

ARTIFACTS = Path(__file__).resolve().parent.parent / "ci-artifacts"
PROBE = """<script>
window.__errors = [];
window.__alerts = [];
window.alert = function (message) { window.__alerts.push(String(message)); };
(function () {
  var original = console.error;
  console.error = function () {
    window.__errors.push(Array.prototype.join.call(arguments, ' '));
    original.apply(console, arguments);
  };
  window.addEventListener('error', function (e) {
    window.__errors.push('error: ' + (e.message || (e.target && (e.target.src || e.target.href))));
  }, true);
  window.addEventListener('load', function () {
    var images = Array.prototype.slice.call(document.images);
    var broken = images.filter(function (im) { return !(im.complete && im.naturalWidth > 0); });
    var out = document.createElement('pre');
    out.id = 'probe-result';
    out.textContent = JSON.stringify({images: images.length, broken: broken.length,
                                      errors: window.__errors, alerts: window.__alerts});
    document.body.appendChild(out);
  });
})();
</script>"""


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _flags(profile: Path) -> list[str]:
    return [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--no-first-run",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        f"--user-data-dir={profile}",
    ]


@pytest.fixture(scope="module")
def browser() -> str:
    found = chromium()
    if found is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI=true but chromium is missing: .ci/run must install it")
        pytest.skip("chromium is not installed (apt-get install chromium); CI runs this test")
    return found


def _probe(browser: str, html: str, tmp_path: Path) -> dict:
    """Open `html` (probe injected) headless and return what the probe wrote into the DOM."""
    probed = tmp_path / "probed.html"
    probed.write_text(html.replace("<head>", "<head>" + PROBE, 1))
    run = subprocess.run(
        [
            browser,
            *_flags(tmp_path / "profile"),
            "--virtual-time-budget=10000",
            "--dump-dom",
            probed.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    match = re.search(r'<pre id="probe-result">(.*?)</pre>', run.stdout, re.S)
    assert match, f"the probe did not report; chromium stderr:\n{run.stderr[-2000:]}"
    return json.loads(unescape(match.group(1)))


def test_probe_catches_broken_images_and_console_errors(tmp_path, browser):
    """The probe itself can fail: a broken image and a console error are both reported."""
    page = (
        "<!DOCTYPE html><html><head></head><body>"
        '<img src="data:image/png;base64,AAAA"><script>console.error("boom")</script>'
        '<script>alert("<ran>")</script>'
        "</body></html>"
    )
    result = _probe(browser, page, tmp_path)
    assert result["images"] == 1 and result["broken"] == 1
    assert "boom" in result["errors"]
    assert result["alerts"] == ["<ran>"]


def test_report_renders_in_chromium(tmp_path, browser):
    data, _, eq = fake_fit(with_a=False)
    _, _, neq = fake_fit(with_a=True)
    evidence = bayes_verdict(eq, neq, check_convergence=False)
    doc, summary = build_report(eq, data, evidence=evidence, source="browser-test")
    paths = doc.write(tmp_path / "report.html", summary)
    html = paths["html"].read_text()
    result = _probe(browser, html, tmp_path)
    assert result["images"] == 8
    assert result["broken"] == 0
    assert result["errors"] == []
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report.png"
    subprocess.run(
        [
            browser,
            *_flags(tmp_path / "profile2"),
            "--hide-scrollbars",
            "--window-size=1200,2200",
            f"--screenshot={shot}",
            paths["html"].as_uri(),
        ],
        capture_output=True,
        timeout=120,
    )
    assert shot.stat().st_size > 50_000  # a rendered page with figures, not a blank one


def test_hostile_names_never_run_in_chromium(tmp_path, browser):
    """State and LLM names holding <script>, <img onerror>, </title> etc.: neither the HTML
    report nor its Markdown twin rendered by a CommonMark renderer (raw HTML passed through)
    runs any of them — no alert, no script error, no failed load, every figure decodes."""
    from test_hostile_names import HOSTILE_LLM, hostile_panel, render_markdown

    from detailed_balance.models import EquilibriumModel
    from detailed_balance.sampling import fit

    data = hostile_panel().select(HOSTILE_LLM)
    result = fit(EquilibriumModel(), data, method="map", seed=1)
    doc, summary = build_report(
        result, data, other_method="map", source="<img src=x onerror=alert(2)>"
    )
    paths = doc.write(tmp_path / "report.html", summary)
    twin = render_markdown(paths["markdown"].read_text(encoding="utf-8"))
    pages = {
        "html": paths["html"].read_text(encoding="utf-8"),
        "markdown": f'<!DOCTYPE html><html><head><meta charset="utf-8"></head><body>{twin}</body></html>',
    }
    for kind, page in pages.items():
        seen = _probe(browser, page, tmp_path)  # beside report_figures/: the twin's images load
        assert seen["alerts"] == [], kind
        assert seen["errors"] == [], kind
        assert seen["images"] == 8 and seen["broken"] == 0, (kind, seen)
