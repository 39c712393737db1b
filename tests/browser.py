"""Open an HTML file in headless Chromium and report JavaScript errors and images that did not load.

A probe script is put in a copy of the page; after `load` it writes a JSON verdict into the DOM,
which `--dump-dom` prints."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

PROBE = """<script>
window.__errors = [];
window.addEventListener('error', e => window.__errors.push(String(e.message || e.type)), true);
window.addEventListener('load', () => {
  const imgs = Array.from(document.images);
  const broken = imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt || i.src.slice(0, 40));
  const out = document.createElement('pre');
  out.id = '__probe';
  out.textContent = '@@' + 'PROBE' + JSON.stringify({images: imgs.length, broken: broken, errors: window.__errors}) + 'PROBE' + '@@';
  document.body.appendChild(out);
});
</script>"""


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def check_page(html_path: Path, screenshot: Path | None = None) -> dict:
    exe = chromium()
    assert exe, "no Chromium"
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "page.html"
        text = Path(html_path).read_text()
        page.write_text(text.replace("<head>", "<head>" + PROBE, 1))
        r = subprocess.run([exe, *FLAGS, f"--user-data-dir={tmp}/profile", "--virtual-time-budget=5000",
                            "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
        m = re.search(r"@@PROBE(.*?)PROBE@@", r.stdout, re.S)
        assert m, f"the probe did not run: {r.stderr[-2000:]}"
        verdict = json.loads(m.group(1).replace("&quot;", '"'))
        if screenshot is not None:
            subprocess.run([exe, *FLAGS, f"--user-data-dir={tmp}/profile2", "--window-size=1300,2400",
                            f"--screenshot={screenshot}", Path(html_path).resolve().as_uri()],
                           capture_output=True, timeout=120)
    return verdict
