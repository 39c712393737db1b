"""Downloading data files from a list of mirrors with a progress bar, atomically."""
from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from sgtlab.data.base import check_md5
from sgtlab.errors import DataError
from sgtlab.io import atomic_path


def download_file(urls: list[str], dest: Path, md5: str | None, timeout: float = 30.0) -> Path:
    """Fetch `dest` from the first mirror that answers; the file appears only when complete
    and md5-checked. Raises DataError naming the file when no mirror can be reached."""
    errors = []
    for url in urls:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp, atomic_path(dest) as tmp:
                total = int(resp.headers.get("Content-Length") or 0) or None
                with open(tmp, "wb") as f, tqdm(total=total, unit="B", unit_scale=True,
                                               desc=f"download {dest.name}", leave=False) as bar:
                    while block := resp.read(1 << 16):
                        f.write(block)
                        bar.update(len(block))
                check_md5(tmp, md5)
            return dest
        except (urllib.error.URLError, OSError, DataError) as e:
            errors.append(f"{url}: {e}")
    raise DataError(f"could not download {dest.name}: " + "; ".join(errors))
