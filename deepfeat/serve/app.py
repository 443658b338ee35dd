"""The FastAPI application: the web page, ``/predict``, ``/health``, ``/model``.

Build it with :func:`create_app` from a predictor (:func:`~deepfeat.serve.predictors.load_predictor`);
``deepfeat serve`` runs it with uvicorn. OpenAPI docs are at ``/docs``.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.security import APIKeyHeader
from starlette.concurrency import run_in_threadpool

from deepfeat import __version__
from deepfeat.serve.batcher import MicroBatcher, QueueFull
from deepfeat.serve.limits import ServeLimits
from deepfeat.serve.texts import read_texts_request
from deepfeat.serve.uploads import BodyLimit, RequestRefused, Upload, decode_upload, read_uploads

__all__ = ["create_app", "API_KEY_HEADER"]

log = logging.getLogger(__name__)

API_KEY_HEADER = "X-API-Key"
#: Seconds a client refused with 503 is asked to wait.
RETRY_AFTER_S = 1

_PREDICT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "files": {"type": "array", "items": {"type": "string", "format": "binary"}}
                    },
                    "required": ["files"],
                }
            },
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "images": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {
                                    "name": {"type": "string"},
                                    "data": {"type": "string", "format": "byte"},
                                },
                            },
                        }
                    },
                    "required": ["images"],
                }
            },
        },
    }
}


def _page() -> str:
    return resources.files("deepfeat.serve").joinpath("page.html").read_text(encoding="utf-8")


def create_app(
    predictor: Any, *, limits: ServeLimits | None = None, api_key: str | None = None
) -> FastAPI:
    """A FastAPI application serving ``predictor``.

    Parameters
    ----------
    predictor : TorchPredictor or OnnxPredictor
        See :func:`~deepfeat.serve.predictors.load_predictor`.
    limits : ServeLimits or None, default=None
        ``None``: the defaults of :class:`~deepfeat.serve.limits.ServeLimits`.
    api_key : str or None, default=None
        When set, ``/predict`` and ``/model`` need it in the ``X-API-Key`` header (or as
        ``Authorization: Bearer <key>``); compared in constant time.

    Returns
    -------
    fastapi.FastAPI
    """
    limits = ServeLimits() if limits is None else limits
    texts = getattr(predictor, "modality", "image") == "text"
    # one input per distinct crop geometry of the model's networks (a predictor with one
    # may give only ``preprocess``); a text model has none
    geometries = [] if texts else list(getattr(predictor, "inputs", None) or [predictor.preprocess])
    batcher = MicroBatcher(
        predictor.predict,
        max_batch=limits.max_batch,
        wait_s=limits.batch_wait_ms / 1000.0,
        max_queue=limits.max_queue,
    )
    decoding = asyncio.Semaphore(4)  # decoded full-size images held at once, per server
    page = _page()

    @asynccontextmanager
    async def lifespan(_: FastAPI):  # noqa: ANN202
        await batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(
        title="deepfeat model server",
        version=__version__,
        description="Predict labels and class probabilities of images with a deepfeat model.",
        lifespan=lifespan,
    )
    app.add_middleware(BodyLimit, max_bytes=limits.max_upload_bytes)
    app.state.batcher = batcher
    app.state.predictor = predictor
    app.state.limits = limits
    header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False)

    def check_key(request: Request, key: str | None = Depends(header)) -> None:
        if api_key is None:
            return
        if key is None:
            auth = request.headers.get("authorization", "")
            key = auth[7:] if auth.lower().startswith("bearer ") else None
        if key is None or not hmac.compare_digest(key.encode(), api_key.encode()):
            raise HTTPException(
                401,
                f"missing or wrong API key: send it in the {API_KEY_HEADER} header",
                headers={"WWW-Authenticate": "Bearer"},
            )

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/health", summary="Is the server up; how full is its queue")
    async def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "runtime": predictor.runtime,
            "queued_images": batcher.pending,
            "throughput": batcher.throughput,
            "api_key_required": api_key is not None,
            "limits": limits.to_dict(),
        }

    @app.get("/model", summary="Classes, feature recipe, training summary", dependencies=[Depends(check_key)])
    async def model_info() -> dict[str, Any]:
        inputs = [{"crop": [int(v) for v in p["crop"]], "resize": p["resize"],
                   "interpolation": p["interpolation"]} for p in geometries]
        info = dict(predictor.describe())
        info.setdefault("modality", "image")
        if inputs:
            info["input"] = inputs[0]
            info["inputs"] = inputs  # one per distinct crop geometry of the model's networks
        info["throughput"] = batcher.throughput
        return info

    # as featurizing decodes; one decode serves every input (the largest draft covers all)
    draft = max((max(int(p["resize"]), *(int(v) for v in p["crop"])) for p in geometries), default=0)

    def prepare(up: Upload) -> tuple[Any, int, str]:
        img, code, reason = decode_upload(up, limits, draft)
        if img is None:
            return None, code, reason
        try:
            return predictor.prepare(img), 200, ""
        except Exception as exc:  # noqa: BLE001 - an odd image must not take the request down
            return None, 400, f"cannot resize this image: {type(exc).__name__}: {exc}"

    async def prepare_bounded(up: Upload) -> tuple[Any, int, str]:
        async with decoding:
            return await run_in_threadpool(prepare, up)

    @app.post(
        "/predict",
        summary="Label one or more images",
        dependencies=[Depends(check_key)],
        openapi_extra=_PREDICT_BODY,
    )
    async def predict(request: Request) -> JSONResponse:
        t0 = time.perf_counter()
        if batcher.pending >= limits.max_queue:  # full: refuse before reading the body
            return JSONResponse(
                {"detail": f"the server holds {batcher.pending} images, at most {limits.max_queue}: "
                           f"try again shortly"},
                status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)},
            )
        try:
            if texts:
                ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
                items = read_texts_request(await request.body(), ctype, limits.max_files)
                uploads = [Upload(it.name, None, it.error) for it in items]
            else:
                uploads = await read_uploads(request, limits)
        except RequestRefused as exc:
            return JSONResponse({"detail": exc.reason}, status_code=exc.status)
        try:
            batcher.reserve(len(uploads))
        except QueueFull as exc:
            return JSONResponse(
                {"detail": str(exc)}, status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)}
            )
        reserved = len(uploads)
        try:
            if texts:  # nothing to decode: a text is its own input, or the reason it is refused
                prepared = [(it.text, 400 if it.text is None else 200, it.error) for it in items]
            else:
                prepared = await asyncio.gather(*(prepare_bounded(u) for u in uploads))
            bad = sum(p[0] is None for p in prepared)
            batcher.release(bad)
            reserved -= bad
            futures = []
            for pixels, _, _ in prepared:
                if pixels is not None:
                    futures.append(batcher.enqueue(pixels))
                    reserved -= 1  # queued: the batch worker gives the room back
            answers = await asyncio.gather(*futures, return_exceptions=True)
        finally:
            batcher.release(reserved)
        results, it = [], iter(answers)
        for i, (up, (pixels, code, reason)) in enumerate(zip(uploads, prepared)):
            row: dict[str, Any] = {"index": i, "name": up.name}
            if pixels is not None:
                ans = next(it)
                if isinstance(ans, BaseException):
                    code, reason = 500, f"prediction failed: {type(ans).__name__}: {ans}"
                else:
                    row.update(status="ok", code=200, **ans)
            if code != 200:
                row.update(status="error", code=code, error=reason)
            results.append(row)
        n_ok = sum(r["status"] == "ok" for r in results)
        codes = {r["code"] for r in results if r["status"] != "ok"}
        status = 200 if n_ok else (codes.pop() if len(codes) == 1 else 400)
        doc = {
            "results": results,
            "n_ok": n_ok,
            "n_failed": len(results) - n_ok,
            "runtime": predictor.runtime,
            "seconds": round(time.perf_counter() - t0, 4),
        }
        return JSONResponse(doc, status_code=status)

    return app
