"""The web page's server: a small Starlette app over impasto.inference, the code stylize.py runs.

A photo is uploaded once (POST /api/photos, the file's bytes as the body) and kept for a while under an id. Each
stylization (POST /api/stylize) names the photo, a style (and, for a painting of a file of several, another of its
paintings to blend with, and that one's weight), the strength and the colour choice; the network's output
is kept too, so that moving the strength or the colour choice only remixes it, which takes a fraction of a pass.
Passes run one at a time, in a worker thread: a second user waits for the first, and the memory plan (whole pass or
tiles) holds for each.
"""

import json
import secrets
import sys
import threading
import time
from collections import OrderedDict
from importlib import resources

import torch
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from ..errors import UserError
from ..runtime import describe
from .library import StyleLibrary

KEPT_PHOTOS = 8  # uploads kept, the oldest forgotten first
KEPT_OUTPUTS = 3  # network outputs, with their inputs, kept for remixing: 216 MB at 12 megapixels


class TooLarge(Exception):
    pass


class LRU(OrderedDict):
    def __init__(self, capacity: int):
        super().__init__()
        self.capacity = capacity

    def put(self, key, value) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.capacity:
            self.popitem(last=False)

    def find(self, key):
        if key in self:
            self.move_to_end(key)
            return self[key]
        return None


def error(message: str, status: int = 400) -> JSONResponse:
    print(f"error: {message}", file=sys.stderr)
    return JSONResponse({"error": message}, status_code=status)


def create_app(library: StyleLibrary, max_upload_mb: float = 40) -> Starlette:
    photos, outputs = LRU(KEPT_PHOTOS), LRU(KEPT_OUTPUTS)
    cache_lock, compute_lock = threading.Lock(), threading.Lock()
    max_bytes = int(max_upload_mb * 2**20)
    page = resources.files(__package__).joinpath("static", "index.html").read_text(encoding="utf-8")

    async def index(request: Request) -> Response:
        return HTMLResponse(page)

    async def styles(request: Request) -> Response:
        return JSONResponse({
            "styles": [{"name": s.name, "steps": s.meta.get("steps"), "thumbnail": f"/api/styles/{s.name}/thumbnail",
                        "blends_with": library.partners(s.name)} for s in library.styles.values()],
            "device": describe(library.device, library.dtype),
            "max_upload_mb": max_upload_mb,
        })

    async def thumbnail(request: Request) -> Response:
        try:
            data = await run_in_threadpool(library.thumbnail, request.path_params["name"])
        except UserError as e:
            return error(str(e), 404)
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    async def read_body(request: Request) -> bytes:
        # An oversized body is read to its end and dropped: answering before the client has sent it all
        # closes the connection under the client, which then sees a broken pipe instead of the message.
        body = bytearray()
        too_large = False
        async for chunk in request.stream():
            if too_large or len(body) + len(chunk) > max_bytes:
                too_large = True
                body.clear()
                continue
            body += chunk
        if too_large:
            raise TooLarge
        return bytes(body)

    async def upload(request: Request) -> Response:
        from ..images import load_photo

        name = request.headers.get("x-filename") or "the upload"
        try:
            data = await read_body(request)
        except TooLarge:
            return error(f"{name} is larger than the upload limit of {max_upload_mb:g} MB", 413)
        if not data:
            return error("the upload is empty: choose a photo")
        try:
            photo = await run_in_threadpool(load_photo, data, "photo", name)
        except UserError as e:
            return error(str(e), 422)
        photo_id = secrets.token_urlsafe(12)
        with cache_lock:
            photos.put(photo_id, photo)
        width, height = photo.rgb.size
        return JSONResponse({"id": photo_id, "width": width, "height": height})

    def render(photo_id: str, style: str, strength: float, keep_colors: bool, size: int | None,
               blend: tuple[str, float] | None = None) -> tuple[bytes, dict]:
        from ..images import encode_image, long_side_size, resize_long_side, to_pil, to_tensor

        with cache_lock:
            photo = photos.find(photo_id)
        if photo is None:
            raise UserError("this photo is no longer kept on the server: upload it again")
        stylizer = library.stylizer(style, blend)
        start = time.perf_counter()
        if size is not None and size >= max(photo.rgb.size):  # a size on the page caps; it never enlarges
            size = None
        width, height = long_side_size(*photo.rgb.size, size)
        tile = stylizer.plan("the photo", width, height)
        key = (photo_id, style, blend, width, height)
        with cache_lock:
            kept = outputs.find(key)
        how = "remixed" if kept is not None else f"in {tile}-pixel tiles" if tile else "in one pass"
        if kept is None:
            image = to_tensor(resize_long_side(photo.rgb, size)).unsqueeze(0)
            with compute_lock:
                kept = image, stylizer.raw(image, tile).half()
            with cache_lock:
                outputs.put(key, kept)
        image, raw = kept
        with torch.inference_mode():
            out = stylizer.finish(raw.float(), image, keep_colors=keep_colors, strength=strength)
        fmt = "PNG" if photo.alpha is not None else "JPEG"
        data = encode_image(to_pil(out[0]), fmt, alpha=photo.alpha)
        seconds = time.perf_counter() - start
        return data, {"Content-Type": f"image/{fmt.lower()}",
                      "X-Impasto-Note": f"{width}x{height}, {how}, {seconds:.1f} s, on {stylizer.describe()}"}

    async def stylize(request: Request) -> Response:
        try:
            body = json.loads(await request.body() or b"{}")
            photo_id, style = str(body["photo"]), str(body["style"])
            strength, keep_colors = float(body.get("strength", 1.0)), bool(body.get("keep_colors", False))
            size = int(body["size"]) if body.get("size") else None
            blend = (str(body["blend"]["with"]), float(body["blend"]["weight"])) if body.get("blend") else None
        except (ValueError, KeyError, TypeError, OverflowError):  # OverflowError: a size of 1e400 is infinite
            return error("a stylize request needs JSON with photo, style, strength, keep_colors and size (and "
                         "optionally blend: {with, weight})")
        if not 0 <= strength <= 1:
            return error(f"strength must be between 0 and 1, got {strength}")
        if size is not None and size < 16:
            return error(f"size must be 16 pixels or more, got {size}")
        try:
            data, headers = await run_in_threadpool(render, photo_id, style, strength, keep_colors, size, blend)
        except UserError as e:
            return error(str(e), 422)
        except (MemoryError, torch.cuda.OutOfMemoryError):  # beyond the plan's estimate
            return error("out of memory: choose a smaller size", 507)
        return Response(data, headers=headers)

    return Starlette(routes=[
        Route("/", index),
        Route("/api/styles", styles),
        Route("/api/styles/{name}/thumbnail", thumbnail),
        Route("/api/photos", upload, methods=["POST"]),
        Route("/api/stylize", stylize, methods=["POST"]),
    ])
