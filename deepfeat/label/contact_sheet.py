"""An HTML contact sheet of picks: a thumbnail (or the text) per item, rank and reason."""

from __future__ import annotations

import base64
import html
import io
import os
from typing import Any

__all__ = ["THUMB_PX", "write_contact_sheet"]

#: Longest side of a thumbnail, in pixels.
THUMB_PX = 160
_TEXT_CHARS = 300

_STYLE = """
body{font-family:sans-serif;margin:1em}
.grid{display:flex;flex-wrap:wrap;gap:10px}
figure{width:%(w)dpx;margin:0;border:1px solid #ccc;padding:4px;font-size:12px}
figure.check{border-color:#c60}
img{max-width:%(w)dpx;max-height:%(w)dpx;display:block;margin:auto}
.rank{font-weight:bold}.path{word-break:break-all;color:#444}
.text{white-space:pre-wrap;max-height:%(w)dpx;overflow:auto;background:#f6f6f6}
"""


def _thumbnail(path: str) -> str | None:
    """A base64 JPEG data URI of the image at ``path``, or None if it is not a readable image."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im).convert("RGB")
            im.thumbnail((THUMB_PX, THUMB_PX))
            buf = io.BytesIO()
            im.save(buf, format="JPEG", quality=80)
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _text(path: str) -> str:
    if not os.path.isfile(path):  # a text itself (a row of a CSV of texts), not a file
        return path[:_TEXT_CHARS]
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read(_TEXT_CHARS)
    except OSError as exc:
        return f"(unreadable: {exc.strerror or exc})"


def write_contact_sheet(table: Any, path: str | os.PathLike, *, title: str = "Label these next") -> str:
    """Write ``table`` (columns ``path, rank, action, reason``) as a self-contained HTML page.

    Images are embedded as small JPEG thumbnails; anything else shows its first
    characters. Returns the path written.

    Examples
    --------
    >>> import pandas as pd, tempfile, os
    >>> t = pd.DataFrame({"path": ["nowhere.png"], "rank": [1], "action": ["label"],
    ...                   "reason": ["typical <b>"]})
    >>> out = write_contact_sheet(t, os.path.join(tempfile.mkdtemp(), "picks.html"))
    >>> "typical &lt;b&gt;" in open(out).read()
    True
    """
    cards = []
    for row in table.itertuples(index=False):
        p = str(row.path)
        uri = _thumbnail(p)
        body = (
            f'<img src="{uri}" alt="{html.escape(os.path.basename(p))}">'
            if uri
            else f'<div class="text">{html.escape(_text(p))}</div>'
        )
        action = getattr(row, "action", "label")
        what = "check this label" if action == "check" else "label this"
        cards.append(
            f'<figure class="{html.escape(str(action))}">{body}<figcaption>'
            f'<span class="rank">#{int(row.rank)} {what}</span><br>'
            f'<span class="path">{html.escape(p)}</span><br>{html.escape(str(row.reason))}'
            f"</figcaption></figure>"
        )
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_STYLE % {'w': THUMB_PX}}</style></head><body><h1>{html.escape(title)}</h1>"
        f"<p>{len(cards)} item(s), best first.</p><div class='grid'>{''.join(cards)}</div></body></html>"
    )
    out = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w", encoding="utf-8") as fh:
        fh.write(page)
    return out
