"""The report as a reader sees it: rendered by headless Chromium at 1280 px, measured in the page itself.

A copy of the report gets a small script that measures the laid-out page (table widths, the first section,
figure captions, flattened JSON keys) and writes the result into the DOM, which Chromium dumps. Screenshots of the
top of the report are kept under the test's tmp output for a person to look at.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from mvi_tf.report import build_report

WIDTH = 1280
MEASURE = """
<script>
window.addEventListener('load', () => {
  const vw = document.documentElement.clientWidth;
  const tables = [...document.querySelectorAll('table')].map(t => ({
    caption: (t.querySelector('caption') || {}).textContent || '',
    right: Math.ceil(t.getBoundingClientRect().right), width: Math.ceil(t.getBoundingClientRect().width)}));
  const images = [...document.querySelectorAll('img')].map(img => {
    const fig = img.closest('figure');
    const cap = fig ? fig.querySelector('figcaption') : null;
    return {caption: cap ? cap.textContent.trim() : '', width: img.getBoundingClientRect().width};
  });
  const cells = [...document.querySelectorAll('td, th')].map(c => c.textContent.trim());
  const out = {viewport: vw, page_width: document.documentElement.scrollWidth, tables, images,
               first_section: (document.querySelector('body section') || {}).id || '',
               headings: [...document.querySelectorAll('h2')].map(h => h.textContent.trim()),
               dotted_cells: cells.filter(t => /^[A-Za-z_]+(\\.[A-Za-z_0-9]+){2,}$/.test(t))};
  const pre = document.createElement('pre');
  pre.id = 'measured';
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>
"""


def _chromium() -> str:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("[chromium] Chromium is not installed; to run it: install the Debian package 'chromium' "
                    "(.ci/run does where apt works)")
    return chromium


def _run(chromium: str, profile, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
         f"--user-data-dir={profile}", f"--window-size={WIDTH},1400", *args],
        capture_output=True, text=True, timeout=180)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory, small_study):
    chromium = _chromium()
    root = tmp_path_factory.mktemp("browser")
    study = Path(shutil.copytree(small_study, root / "study"))
    # An undefined hazard ratio with a long reason (as a tiny cohort gives) must not widen its table.
    table = study / "survival" / "survival_table.csv"
    frame = pd.read_csv(table)
    frame.loc[0, ["hazard_ratio", "hr_lower", "hr_upper", "logrank_p"]] = float("nan")
    frame["note"] = frame["note"].astype("object")
    frame.loc[0, "note"] = "No events among the 5 observations (all censored): the estimate is undefined.; " * 3
    frame.to_csv(table, index=False)
    report = build_report(study)
    probe = report.with_name("report_measured.html")
    probe.write_text(report.read_text().replace("</body>", MEASURE + "</body>"))
    result = _run(chromium, root / "profile", "--virtual-time-budget=10000", "--dump-dom", probe.as_uri())
    assert result.returncode == 0, result.stderr[-2000:]
    match = re.search(r'<pre id="measured">(.*?)</pre>', result.stdout, re.S)
    assert match, "the measuring script did not run"
    measured = json.loads(match.group(1).replace("&quot;", '"').replace("&lt;", "<").replace("&gt;", ">")
                          .replace("&amp;", "&"))
    for name, height in (("report_top.png", 1400), ("report_top_2.png", 2800)):
        shot = _run(chromium, root / "profile", f"--window-size={WIDTH},{height}", f"--screenshot={root / name}",
                    report.as_uri())
        assert shot.returncode == 0 and (root / name).stat().st_size > 10_000, shot.stderr[-2000:]
    return measured, report


def test_summary_comes_first_and_names_the_findings(rendered):
    measured, report = rendered
    assert measured["viewport"] == WIDTH
    assert measured["first_section"] == "summary"
    assert measured["headings"][:2] == ["Summary of findings", "Contents"]
    html = report.read_text()
    summary = html[html.index('id="summary"'):html.index('id="contents"')]
    for words in ("CDLM AUC", "radiological model", "Bayes-optimal", "CT versus MRI", "localise", "HR",
                  "Exported"):
        assert words in summary


def test_no_table_is_wider_than_the_page(rendered):
    measured, _ = rendered
    assert len(measured["tables"]) >= 10
    too_wide = [t["caption"] for t in measured["tables"] if t["right"] > measured["viewport"]]
    assert too_wide == [], f"tables wider than {WIDTH} px: {too_wide}"
    assert measured["page_width"] <= measured["viewport"]


def test_no_flattened_key_table(rendered):
    measured, _ = rendered
    assert measured["dotted_cells"] == []


def test_every_image_has_a_caption_in_words(rendered):
    measured, _ = rendered
    assert len(measured["images"]) >= 20
    for image in measured["images"]:
        caption = image["caption"]
        assert len(caption.split()) >= 6, caption
        assert not re.search(r"\.(png|jpe?g|svg)\b", caption), f"caption is a file name: {caption}"
        assert image["width"] > 50
