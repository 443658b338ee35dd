"""Turn a prediction request into images: multipart files or base64 in JSON, within limits.

Request-level problems (no images, too many, a malformed body) raise
:class:`RequestRefused` with an HTTP status and a one-line reason. Problems of one image
(not base64, not an image, too many pixels) are that image's own status: the others in the
request are still answered. Upload names are only echoed back, never used as paths.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from PIL import Image
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request

from deepfeat.exceptions import ImageDecodeError
from deepfeat.featurize.decode import decode_image
from deepfeat.serve.limits import ServeLimits

__all__ = ["RequestRefused", "Upload", "read_uploads", "decode_upload", "BodyLimit"]

_MAX_NAME = 200


class RequestRefused(Exception):
    """The request as a whole cannot be served: ``status`` and a one-line ``reason``."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass
class Upload:
    """One image of a request: its echoed name and bytes, or why it has none."""

    name: str
    data: bytes | None
    error: str | None = None


def _name(value: Any, index: int) -> str:
    name = value if isinstance(value, str) and value else f"image {index + 1}"
    return name[:_MAX_NAME]


async def _from_multipart(request: Request, limits: ServeLimits) -> list[Upload]:
    try:
        form = await request.form(
            max_files=limits.max_files + 1,
            max_fields=limits.max_files + 16,
            max_part_size=limits.max_upload_bytes,
        )
    except HTTPException as exc:  # Starlette reports a malformed or over-full form as 400
        if exc.status_code == 413:  # BodyLimit
            raise RequestRefused(413, str(exc.detail)) from None
        raise RequestRefused(exc.status_code, f"malformed multipart form: {exc.detail}") from None
    files = [v for _, v in form.multi_items() if isinstance(v, UploadFile)]
    _check_count(len(files), limits)
    out = []
    for i, f in enumerate(files):
        out.append(Upload(_name(f.filename, i), await f.read()))
    await form.close()
    return out


def _from_json(body: bytes, limits: ServeLimits) -> list[Upload]:
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestRefused(400, f"request body is not valid JSON: {exc}") from None
    images = doc.get("images") if isinstance(doc, dict) else None
    if not isinstance(images, list):
        raise RequestRefused(
            400,
            'JSON body must be {"images": [{"name": "...", "data": "<base64>"}, ...]} '
            '(or a list of base64 strings under "images")',
        )
    _check_count(len(images), limits)
    out = []
    for i, item in enumerate(images):
        if isinstance(item, str):
            name, data = _name(None, i), item
        elif isinstance(item, dict) and isinstance(item.get("data"), str):
            name, data = _name(item.get("name"), i), item["data"]
        else:
            out.append(Upload(_name(None, i), None, 'each image must be a base64 string or {"name", "data"}'))
            continue
        if data.startswith("data:") and "," in data:  # a data: URL
            data = data.split(",", 1)[1]
        try:
            out.append(Upload(name, base64.b64decode(data, validate=True)))
        except (binascii.Error, ValueError):
            out.append(Upload(name, None, "data is not valid base64"))
    return out


def _check_count(n: int, limits: ServeLimits) -> None:
    if n == 0:
        raise RequestRefused(400, "no images in the request: send files in the multipart field 'files'")
    if n > limits.max_files:
        raise RequestRefused(
            413, f"too many images in one request: {n}, at most {limits.max_files} (max_files)"
        )


async def read_uploads(request: Request, limits: ServeLimits) -> list[Upload]:
    """The images of a ``POST /predict`` request (multipart ``files`` or JSON ``images``)."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "multipart/form-data":
        return await _from_multipart(request, limits)
    if ctype == "application/json":
        return _from_json(await request.body(), limits)
    raise RequestRefused(
        415,
        f"content type {ctype or '(none)'!r} not accepted: send multipart/form-data files or "
        f"application/json with base64 images",
    )


def decode_upload(
    up: Upload, limits: ServeLimits, draft_size: int | None = None
) -> tuple[Image.Image | None, int, str]:
    """Decode one upload with deepfeat's decoder: ``(image, 200, "")`` or ``(None, code, reason)``.

    A pixel count over ``limits.max_pixels`` is 413 (checked from the header, before the
    pixels are allocated); anything else that is not a readable image is 400.
    ``draft_size`` lets a large JPEG decode at a reduced scale, as featurizing does
    (:attr:`Preprocess.draft_size <deepfeat.featurize.preprocess.Preprocess.draft_size>`).
    """
    if up.data is None:
        return None, 400, up.error or "no data"
    if not up.data:
        return None, 400, "empty file (0 bytes)"
    try:
        return decode_image(up.data, max_pixels=limits.max_pixels, draft_size=draft_size), 200, ""
    except ImageDecodeError as exc:
        code = 413 if exc.reason.startswith("decompression bomb refused") else 400
        return None, code, exc.reason
    except MemoryError:
        return None, 413, "out of memory while decoding"
    except Exception as exc:  # noqa: BLE001 - no upload may take the server down
        return None, 400, f"unexpected decode error: {type(exc).__name__}: {exc}"


class BodyLimit:
    """ASGI middleware: refuse request bodies over ``max_bytes`` with 413, without reading them.

    A declared ``Content-Length`` over the limit is refused before the body is read; a body
    that turns out longer (chunked uploads) stops being read at the limit.
    """

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _reason(self, n: int | None) -> str:
        got = f"{n:,} bytes" if n is not None else "more"
        return f"request body too large: {got}, at most {self.max_bytes:,} bytes (max_upload_bytes)"

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await _send_json(send, 413, {"detail": self._reason(int(declared))})
            return
        seen = 0

        async def limited() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise HTTPException(413, self._reason(None))
            return message

        await self.app(scope, limited, send)


async def _send_json(send: Any, status: int, doc: dict) -> None:
    body = json.dumps(doc).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                        (b"connection", b"close")],
        }
    )
    await send({"type": "http.response.body", "body": body})
