"""The FastAPI app: the page at `/`, the JSON API under `/api`, OpenAPI at `/openapi.json`, docs at `/docs`.

Every error a client can cause is a 4xx with the body `{"error": "<one line>"}`:
400 bad options, 401 missing/wrong token, 404 unknown model, 413 body over --max-upload-mb,
422 an upload that is not a readable image (corrupt, truncated, text, decompression bomb) or a
malformed request, 503 when no worker answered within --timeout. A 500 would be a lensforge bug;
it is still JSON with one line and never a stack trace.
"""
from __future__ import annotations

import base64
import hmac
import json
import time
from pathlib import Path
from typing import Any, Optional

from fastapi import Depends, FastAPI, File, Form, Path as PathParam, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from .. import __version__
from ..errors import DataError, LensforgeError, UsageError
from .adapters import Adapter, Upload
from .pool import Busy, WorkerPool

STATIC = Path(__file__).parent / "static"
MB = 1_000_000
#: Multipart framing and the options field ride on top of the file itself: an upload of exactly
#: --max-upload-mb must still pass.
FRAMING = 64 * 1024


# ----------------------------------------------------------------------------- response schemas

class ErrorBody(BaseModel):
    error: str = Field(description="one line saying what was wrong")


class OptionInfo(BaseModel):
    name: str
    type: str
    default: Any = None
    nullable: bool
    minimum: Optional[float] = None
    maximum: Optional[float] = None
    choices: Optional[list] = None
    help: str


class ModelInfo(BaseModel):
    name: str
    task: str
    model: Optional[str] = Field(None, description="network architecture")
    classes: Optional[list[str]] = None
    input_size: Optional[list[int]] = Field(None, description="[height, width] the network works at")
    accepts: str = Field(description="'image': POST an image upload; 'none': no input (sampling)")
    draw: bool = Field(description="the page offers a drawing canvas")
    options: list[OptionInfo]


class Prediction(BaseModel):
    model: str
    task: str
    result: dict[str, Any]
    images: dict[str, str] = Field(description="name -> PNG image, base64-encoded")
    seconds: float = Field(description="time on the worker: decoding, the model, PNG encoding (not the queue)")


class Health(BaseModel):
    status: str
    version: str
    models: int
    workers: int
    running: int
    waiting: int
    queue_limit: int
    timeout_s: float
    served: int
    refused: int


def _errors(*codes: int) -> dict:
    text = {400: "bad options", 401: "missing or wrong bearer token", 404: "no such model",
            413: "upload larger than --max-upload-mb", 422: "not a readable image, or a malformed request",
            503: "no worker answered within --timeout"}
    return {c: {"model": ErrorBody, "description": text[c]} for c in codes}


# ----------------------------------------------------------------------------- request body limit

class TooLarge(HTTPException):
    def __init__(self, limit: int):
        super().__init__(413, f"upload larger than the limit of {limit / MB:g} MB (--max-upload-mb)")


class BodyLimit:
    """ASGI middleware: refuses a body over `limit` bytes from its Content-Length before reading it,
    and stops a chunked body as soon as the running count passes the limit (nothing is buffered)."""

    def __init__(self, app, limit: int, slack: int = 0):
        self.app, self.limit, self.slack = app, int(limit), int(slack)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit + self.slack):
            code = 413 if length.isdigit() else 400
            msg = TooLarge(self.limit).detail if code == 413 else "bad Content-Length header"
            return await _send_json(send, code, msg)
        seen = 0
        started = False

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit + self.slack:
                    raise TooLarge(self.limit)
            return message

        async def tracked_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracked_send)
        except TooLarge as e:
            if not started:
                await _send_json(send, 413, e.detail)


async def _send_json(send, code: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": code,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


# ----------------------------------------------------------------------------- the app

def _png_b64(image, text: dict[str, str] | None = None) -> str:
    from ..tasks.apply import encode_image

    return base64.b64encode(encode_image(image, "PNG", text)).decode("ascii")


def _parse_options(text: Optional[str]) -> dict:
    if text is None or not text.strip():
        return {}
    try:
        values = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        raise UsageError("options: not valid JSON; send a JSON object such as {\"top_k\": 3}") from None
    if not isinstance(values, dict):
        raise UsageError("options: expected a JSON object such as {\"top_k\": 3}")
    return values


def create_app(models: list[Adapter], *, token: str | None = None, max_upload_mb: float = 20.0,
               pool: WorkerPool | None = None) -> FastAPI:
    """The server for already loaded models (lensforge.serve.adapters.load_model)."""
    by_name = {m.name: m for m in models}
    pool = pool or WorkerPool()
    limit = int(max_upload_mb * MB)
    app = FastAPI(title="lensforge", version=__version__,
                  description="Trained lensforge models: list them, and predict with an image upload. Errors are "
                              "`{\"error\": \"one line\"}` with a 4xx status.")
    app.state.pool = pool
    app.state.models = by_name

    bearer = HTTPBearer(auto_error=False, description="the --token the server was started with")

    def check_token(cred: Optional[HTTPAuthorizationCredentials] = Depends(bearer)) -> None:
        if cred is None or not hmac.compare_digest(cred.credentials.encode(), token.encode()):
            raise HTTPException(401, "missing or wrong bearer token: send 'Authorization: Bearer <token>'",
                                headers={"WWW-Authenticate": "Bearer"})

    # The schema lists the served names (clients and fuzzers then reach the models); the check stays
    # ours, so any other name is a 404 with the list, not a validation error.
    name_param = PathParam(description="a served model's name (GET /api/models)",
                           json_schema_extra={"enum": sorted(by_name)} if by_name else None)

    # The security requirement is declared only when a token is set, so the schema tells the truth.
    guarded = [Depends(check_token)] if token else []
    auth_errors = (401,) if token else ()

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        return JSONResponse({"error": str(exc.detail)}, exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        errs = exc.errors()
        first = errs[0] if errs else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path"))
        return JSONResponse({"error": f"{where or 'request'}: {first.get('msg', 'invalid request')}"}, 422)

    @app.exception_handler(Exception)
    async def bug(request: Request, exc: Exception):   # a lensforge bug: still one JSON line, no trace
        return JSONResponse({"error": f"internal error ({type(exc).__name__}); please report it"}, 500)

    def model_or_404(name: str) -> Adapter:
        m = by_name.get(name)
        if m is None:
            known = ", ".join(sorted(by_name)) or "none"
            raise HTTPException(404, f"no model named {name[:80]!r} (served: {known[:400]})")
        return m

    @app.get("/api/health", response_model=Health, summary="liveness and pool state (no token needed)")
    async def health() -> dict:
        return {"status": "ok", "version": __version__, "models": len(by_name), **pool.stats()}

    @app.get("/api/models", response_model=list[ModelInfo], dependencies=guarded, responses=_errors(*auth_errors),
             summary="the served models: name, task, classes, input size, accepted input, options")
    async def list_models() -> list[dict]:
        return [m.describe() for m in models]

    @app.get("/api/models/{name}", response_model=ModelInfo, dependencies=guarded,
             responses=_errors(*auth_errors, 404), summary="one model")
    async def get_model(name: str = name_param) -> dict:
        return model_or_404(name).describe()

    @app.post("/api/models/{name}/predict", response_model=Prediction, dependencies=guarded,
              responses=_errors(400, *auth_errors, 404, 413, 422, 503),
              summary="run a model on an uploaded image (or, for samplers, on nothing)")
    async def predict(name: str = name_param,
                      image: UploadFile = File(None, description="the image (JPEG, PNG, BMP, GIF, TIFF, "
                                                         "WebP, PNM); not needed by samplers"),
                      options: Optional[str] = Form(None, description="JSON object of the model's options, "
                                                    "e.g. {\"top_k\": 3}; see GET /api/models")) -> dict:
        m = model_or_404(name)
        try:
            opts = m.options(_parse_options(options))
        except UsageError as e:
            raise HTTPException(400, str(e)) from None
        upload = None
        if m.accepts == "image":
            if image is None:
                raise HTTPException(422, "image: this model needs an image upload (multipart field 'image')")
            data = await image.read()
            upload = Upload(data, _safe_name(image.filename))
        try:
            result, images, seconds = await pool.run(_run, m, upload, opts)
        except Busy as e:
            raise HTTPException(503, str(e), headers={"Retry-After": "1"}) from None
        except DataError as e:
            raise HTTPException(422, str(e)) from None
        except LensforgeError as e:    # a refusal that depends on the options/image size (memory, range)
            raise HTTPException(400, str(e)) from None
        return {"model": m.name, "task": m.task, "result": result, "images": images, "seconds": round(seconds, 4)}

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(BodyLimit, limit=limit, slack=FRAMING)
    return app


def _safe_name(name: Optional[str]) -> str:
    """The client's file name, for error messages only (never a path we open)."""
    name = (name or "upload").replace("\n", " ").replace("\r", " ")
    return Path(name).name[:120] or "upload"


def _run(m: Adapter, upload: Upload | None, opts) -> tuple[dict, dict, float]:
    """On a worker: decoding and the model (the adapter), then PNG encoding (CPU work too, so it
    belongs here, not on the event loop); the seconds this took."""
    import torch

    t0 = time.perf_counter()
    with torch.inference_mode():
        out = m.run(upload, opts)
    images = {k: _png_b64(v, out.text.get(k)) for k, v in out.images.items()}
    return _jsonable(out.result), images, time.perf_counter() - t0


def _jsonable(v: Any) -> Any:
    import numpy as np

    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, float) and v != v:
        return None
    return v
