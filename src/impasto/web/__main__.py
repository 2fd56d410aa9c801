"""python -m impasto.web: serve the page on this machine and print its address (it opens nothing by itself)."""

import argparse
import socket
import sys
from pathlib import Path

from ..errors import UserError, exit_on_user_error
from ..lookup import MODELS, TRAINED_STYLES, shipped_folder


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m impasto.web", description=__doc__.splitlines()[0])
    p.add_argument("--styles", action="append", default=[], metavar="DIR",
                   help="a folder of styles to offer beside checkpoints/ and the shipped styles "
                        "(repeatable)")
    p.add_argument("--checkpoints", default=None, metavar="DIR",
                   help="the folder of trained styles (default: checkpoints, where train.py exports, if there is "
                        "one here)")
    p.add_argument("--model", choices=MODELS, default="full",
                   help="which shipped network paints: full (the default), or thin: about four times faster on a "
                        "CPU, for now less faithful")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 for the network)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860; 0 picks a free one)")
    p.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, cuda:1, …")
    p.add_argument("--precision", default="auto", help="auto, fp32 or bf16, as in stylize.py")
    p.add_argument("--max-upload-mb", type=float, default=40, help="the largest photo accepted (default 40 MB)")
    p.add_argument("--max-megapixels", type=float, default=50,
                   help="the largest photo accepted, decoded (default 50 megapixels: about 150 MB while it is kept)")
    args = p.parse_args(argv)
    for flag in ("max_upload_mb", "max_megapixels"):
        if not 0 < getattr(args, flag) < float("inf"):
            p.error(f"--{flag.replace('_', '-')} must be a positive number")
    return args


def style_folders(args: argparse.Namespace) -> list[Path]:
    """Where the styles are, in order: a name found in several folders is taken from the first, so a retrained
    style comes before the shipped one."""
    checkpoints = Path(args.checkpoints or TRAINED_STYLES).expanduser()
    folders = [checkpoints] if args.checkpoints or checkpoints.is_dir() else []
    return folders + [Path(d).expanduser() for d in args.styles] + [shipped_folder(args.model)]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with exit_on_user_error():
        try:
            import uvicorn

            from .app import create_app
        except ImportError as e:
            raise UserError(f"the web page needs {e.name}: pip install -e '.[web]'") from None
        from .library import StyleLibrary

        library = StyleLibrary(style_folders(args), args.device, args.precision)
        listener = socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind((args.host, args.port))
            listener.listen(128)  # from here on, connections wait in the queue until the server takes them
        except OSError as e:
            raise UserError(f"cannot listen on {args.host}:{args.port} ({e.strerror}): pass another --port") from None
        host, port = listener.getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        print(f"impasto: {len(library.styles)} style(s) on {library.device}; open http://{shown}:{port}/ "
              "(Ctrl+C stops)", file=sys.stderr, flush=True)
    config = uvicorn.Config(create_app(library, args.max_upload_mb, args.max_megapixels), log_level="warning")
    uvicorn.Server(config).run(sockets=[listener])


if __name__ == "__main__":
    main()
