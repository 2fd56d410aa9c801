"""The web page's server: a small Starlette app over impasto.inference, the code stylize.py runs.

A photo is uploaded once (POST /api/photos, the file's bytes as the body) and kept for a while under an id. Each
stylization (POST /api/stylize) names the photo, a style (and, for a painting of a file of several, another of its
paintings to blend with, and that one's weight), the strength and the colour choice; the network's output
is kept too, so that moving the strength or the colour choice only remixes it, which takes a fraction of a pass.
Memory is bounded by pixels as well as bytes: a photo over the server's megapixel limit is refused by its header,
unread; at most UPLOADS are read and decoded at once, the rest wait unread; a photo is kept as the bytes it came in
(decoding it again costs far less than a pass) and outputs within a pixel budget; passes run one at a time and at
most QUEUED wait (the next is told to try again), each holding nothing until its turn; a photo over
WHOLE_PASS_MEGAPIXELS runs in tiles. A forgotten photo is answered 410, and the page sends it again.
"""

import asyncio
import json
import secrets
import sys
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from importlib import resources
from urllib.parse import unquote

import torch
from PIL import Image
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from ..errors import UserError, check_fraction
from ..lookup import trained_images
from ..runtime import describe
from ..tiling import DEFAULT_TILE
from .library import StyleLibrary

KEPT_PHOTOS, KEPT_PHOTO_MB = 32, 256  # uploads kept, as sent, the oldest forgotten first
KEPT_OUTPUTS, KEPT_OUTPUT_MEGAPIXELS = 3, 40  # outputs and their inputs kept for remixing (fp16: 12 bytes a pixel)
UPLOADS = 2  # uploads read and decoded at once
QUEUED = 3  # passes waiting behind the running one
WHOLE_PASS_MEGAPIXELS = 4  # larger photos run in tiles: the same result, in a bounded memory


class TooLarge(Exception):
    pass


class Busy(Exception):
    pass


class Forgotten(UserError):
    pass


@dataclass
class Upload:
    data: bytes
    name: str
    width: int
    height: int


class LRU(OrderedDict):
    """At most `capacity` entries and `budget` of their `weight` (the newest is kept even alone over it)."""

    def __init__(self, capacity: int, budget: float = float("inf"), weight=lambda value: 0):
        super().__init__()
        self.capacity, self.budget, self.weight = capacity, budget, weight

    def put(self, key, value) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > 1 and (len(self) > self.capacity or sum(map(self.weight, self.values())) > self.budget):
            self.popitem(last=False)

    def find(self, key):
        if key in self:
            self.move_to_end(key)
            return self[key]
        return None


def error(message: str, status: int = 400) -> JSONResponse:
    print(f"error: {message}", file=sys.stderr)
    return JSONResponse({"error": message}, status_code=status)


def create_app(library: StyleLibrary, max_upload_mb: float = 40, max_megapixels: float = 50) -> Starlette:
    photos = LRU(KEPT_PHOTOS, KEPT_PHOTO_MB * 2**20, lambda upload: len(upload.data))
    outputs = LRU(KEPT_OUTPUTS, KEPT_OUTPUT_MEGAPIXELS * 1e6, lambda kept: kept[0].shape[-1] * kept[0].shape[-2])
    cache_lock, compute_lock = threading.Lock(), threading.Lock()
    queue = threading.BoundedSemaphore(QUEUED + 1)
    uploads = asyncio.Semaphore(UPLOADS)
    max_bytes = int(max_upload_mb * 2**20)
    page = resources.files(__package__).joinpath("static", "index.html").read_text(encoding="utf-8")

    async def index(request: Request) -> Response:
        return HTMLResponse(page)

    async def styles(request: Request) -> Response:
        return JSONResponse({
            "styles": [{"name": s.name, "images": trained_images(s.meta), "blends_with": library.partners(s.name),
                        "thumbnail": f"/api/styles/{s.name}/thumbnail"} for s in library.styles.values()],
            "device": describe(library.device, library.dtype),
            "max_upload_mb": max_upload_mb,
            "max_megapixels": max_megapixels,
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
        from ..images import TooManyPixels, load_photo

        # The page sends the name percent-encoded: a header carries Latin-1 only.
        name = unquote(request.headers.get("x-filename", "")) or "the upload"
        async with uploads:
            try:
                data = await read_body(request)
            except TooLarge:
                return error(f"{name} is larger than the upload limit of {max_upload_mb:g} MB", 413)
            if not data:
                return error("the upload is empty: choose a photo")
            try:
                photo = await run_in_threadpool(load_photo, data, "photo", name, max_megapixels)
            except TooManyPixels as e:
                return error(f"{name} is {e.width}x{e.height}, {e.width * e.height / 1e6:.0f} megapixels: this server "
                             f"takes photos up to {max_megapixels:g} megapixels", 413)
            except UserError as e:
                return error(str(e), 422)
        width, height = photo.rgb.size
        del photo
        photo_id = secrets.token_urlsafe(12)
        with cache_lock:
            photos.put(photo_id, Upload(data, name, width, height))
        return JSONResponse({"id": photo_id, "width": width, "height": height})

    def render(photo_id: str, style: str, strength: float, keep_colors: bool, size: int | None,
               blend: tuple[str, float] | None = None) -> tuple[bytes, dict]:
        from ..images import encode_image, load_photo, long_side_size, resize_long_side, to_pil, to_tensor

        with cache_lock:
            upload = photos.find(photo_id)
        if upload is None:
            raise Forgotten("this photo is no longer kept on the server: upload it again")
        stylizer = library.stylizer(style, blend)
        if size is not None and size >= max(upload.width, upload.height):  # a size on the page caps; never enlarges
            size = None
        width, height = long_side_size(upload.width, upload.height, size)
        tile = DEFAULT_TILE if width * height > WHOLE_PASS_MEGAPIXELS * 1e6 else None
        try:
            tile = stylizer.plan("the photo", width, height, tile)
        except UserError:
            raise UserError(f"the photo at {width}x{height} does not fit in this server's memory: choose a smaller "
                            "size") from None
        key = (photo_id, style, blend, width, height)
        with cache_lock:
            kept = outputs.find(key)
        how = "remixed" if kept is not None else f"in {tile}-pixel tiles" if tile else "in one pass"
        waited = 0.0
        if kept is None:
            if not queue.acquire(blocking=False):
                raise Busy
            try:
                arrived = time.perf_counter()
                with compute_lock:
                    waited = time.perf_counter() - arrived
                    start = time.perf_counter()
                    photo = load_photo(upload.data, "photo", upload.name, max_megapixels)
                    image = to_tensor(resize_long_side(photo.rgb, size)).unsqueeze(0)
                    alpha = photo.alpha and photo.alpha.resize((width, height), Image.Resampling.LANCZOS)
                    del photo
                    kept = image.half(), stylizer.raw(image, tile).half(), alpha
                    del image
            finally:
                queue.release()
            with cache_lock:
                outputs.put(key, kept)
        else:
            start = time.perf_counter()
        image, raw, alpha = kept
        with torch.inference_mode():
            out = stylizer.finish(raw.float(), image.float(), keep_colors=keep_colors, strength=strength)
        fmt = "PNG" if alpha is not None else "JPEG"
        data = encode_image(to_pil(out[0]), fmt, alpha=alpha)
        seconds = time.perf_counter() - start
        queued = f" after {waited:.1f} s in the queue" if waited >= 0.1 else ""
        return data, {"Content-Type": f"image/{fmt.lower()}",
                      "X-Impasto-Note": f"{width}x{height}, {how}, {seconds:.1f} s{queued}, on {stylizer.describe()}"}

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
        try:
            check_fraction(strength, "strength")
        except UserError as e:
            return error(str(e))
        if size is not None and size < 16:
            return error(f"size must be 16 pixels or more, got {size}")
        try:
            data, headers = await run_in_threadpool(render, photo_id, style, strength, keep_colors, size, blend)
        except Forgotten as e:  # the page uploads it again by itself
            return error(str(e), 410)
        except UserError as e:
            return error(str(e), 422)
        except Busy:
            return error("the server is busy with other photos: try again in a moment", 503)
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
