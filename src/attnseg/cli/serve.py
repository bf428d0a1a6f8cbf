"""`attnseg serve`: the web page and HTTP API over models loaded once (FastAPI + uvicorn, the serve extra)."""
from __future__ import annotations

import ctypes
import logging
import sys

from ..pretrained import DEFAULT_MODELS, default_served
from . import options
from .common import CLIError, connect_ray, first_line


def add_arguments(verb: str, p):
    options.add_model(p, required=False, help="model to load (repeatable; default: " + ", ".join(DEFAULT_MODELS)
                      + "); requests pick them by name; `attnseg models --card NAME` says what each is for",
                      loading=False, arch=False, many=True)
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=options.int_range(1, 65535), default=8000)
    options.add_backend(p)
    options.add_dtype(p)
    options.add_threads(p)
    p.add_argument("--max-batch", type=options.int_range(1, 256), default=8, help="requests per model batch")
    p.add_argument("--max-wait-ms", type=options.float_range(0.0, 10000.0), default=0.0,
                   help="how long the worker waits for requests to batch with the first; default 0 (no "
                        "micro-batching: on a 2-core CPU batching measured slower); e.g. 10 on GPUs")
    p.add_argument("--queue", type=options.int_range(1, 100000), default=32, help="queued requests before 503")
    p.add_argument("--max-upload-mb", type=options.float_range(0.001, 10000.0), default=20.0)
    options.add_max_pixels(p, 40_000_000, "per image, read from the header")
    options.add_work_limit(p)
    p.add_argument("--memory-mb", type=options.float_range(64.0, 1e6), default=2048.0,
                   help="memory all requests' decoding and queued work may hold at once (estimated from each image's "
                        "header before decoding); a request that cannot get its share within 10 s is answered 503 "
                        "with Retry-After, one that needs more than all of it 413 (default 2048)")
    p.add_argument("--decode-slots", type=options.int_range(1, 256), default=2,
                   help="images decoded at once (default 2)")
    p.add_argument("--max-connections", type=options.int_range(16, 1_000_000), default=1000,
                   help="open connections before new requests are answered 503 (default 1000; kept below the "
                        "process's open-file limit)")
    p.add_argument("--header-timeout", type=options.float_range(0.1, 3600.0), default=10.0,
                   help="seconds a connection may take to send a request's headers (then 408 and closed; default 10)")
    p.add_argument("--timeout", type=options.float_range(0.1, 3600.0), default=60.0, help="seconds per request")
    p.add_argument("--cors", default=None, metavar="ORIGIN", help="allow this origin (no CORS headers otherwise)")
    options.add_engine(p, "one server process", serve=True)
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default="info",
                   help="server log on stderr: info writes one access line per request; errors always carry the "
                        "request id and traceback (default info)")
    return cmd_serve


def _limit_malloc_arenas(n: int = 2) -> None:
    """glibc gives each thread that allocates its own malloc arena; a server's request threads then grow RSS
    with fragmentation. Two arenas keep it flat (the effect of MALLOC_ARENA_MAX=2; no-op off glibc)."""
    try:
        ctypes.CDLL("libc.so.6").mallopt(-8, n)  # M_ARENA_MAX
    except (OSError, AttributeError):
        pass


def _serve_logging(level: str) -> None:
    """The server's own log on stderr: one access line per request (info), failures with their traceback and
    request id (error)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    log = logging.getLogger("attnseg.serve")
    log.addHandler(handler)
    log.setLevel(level.upper())
    log.propagate = False


def cmd_serve(args) -> int:
    try:
        import importlib

        import uvicorn

        importlib.import_module("attnseg.serve.app")  # the serve extra's packages, checked here with one line
    except ImportError as e:
        raise CLIError(f"attnseg serve needs the serve extra: pip install 'attnseg[serve]' ({e.name} missing)") from None
    _limit_malloc_arenas()
    sources = args.model or default_served()
    if not sources:
        raise CLIError("no model to serve: pass --model SOURCE (repeatable)")
    if args.engine == "ray":
        return _serve_on_ray(args, sources)
    app = _build_app(args, sources)
    _serve_logging(args.log_level)
    print(f"serving {', '.join(app.state.models)} on http://{args.host}:{args.port}/ (API docs: /docs)", file=sys.stderr)
    from ..serve.limits import MAX_HEADER_BYTES, guarded_h11

    files = _raise_open_files()
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False,
                timeout_graceful_shutdown=5, http=guarded_h11(args.header_timeout),
                h11_max_incomplete_event_size=MAX_HEADER_BYTES, timeout_keep_alive=5,
                limit_concurrency=max(16, min(args.max_connections, files - 64)))
    return 0


def _raise_open_files() -> int:
    """The soft limit on open files raised to the hard one (a server holds a descriptor per connection; the
    common soft limit of 1024 would refuse connections long before memory runs out); returns the limit."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or soft < hard:
            target = 1 << 20 if hard == resource.RLIM_INFINITY else hard
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        return soft
    except (ImportError, ValueError, OSError):
        return 1024


def _build_app(args, sources, replica: str | None = None):
    """The app over the models loaded once (in this process, or in one Ray Serve replica)."""
    from ..serve.app import Settings, create_app, load_models

    try:
        models = load_models(sources, args.backend, args.threads, args.max_work_pixels, args.dtype, verbose=True)
    except (ValueError, OSError, ImportError, RuntimeError) as e:
        raise CLIError(first_line(e)) from None
    settings = Settings(max_upload_mb=args.max_upload_mb, max_pixels=args.max_pixels, max_batch=args.max_batch,
                        max_wait_ms=args.max_wait_ms, queue=args.queue, timeout_s=args.timeout, cors=args.cors,
                        memory_mb=args.memory_mb, decode_slots=args.decode_slots, replica=replica)
    return create_app(models, settings)


def _replica(args, sources, replica: str):
    _limit_malloc_arenas()
    _serve_logging(args.log_level)
    return _build_app(args, sources, replica)


def _serve_on_ray(args, sources) -> int:
    """--engine ray: the same app in --replicas Ray Serve replicas behind Ray Serve's proxy on --host:--port."""
    from functools import partial

    from ..ray_engine.serve import deployment, run

    if args.max_replicas and args.max_replicas < args.replicas:
        raise CLIError(f"--max-replicas {args.max_replicas} is below --replicas {args.replicas}")
    startup = connect_ray(args)
    app = deployment(partial(_replica, args, sources), args.replicas, args.max_replicas, cpus=args.threads or 1,
                     max_ongoing=args.queue)
    scale = f"{args.replicas}" + (f"-{args.max_replicas}" if args.max_replicas else "")
    run(app, args.host, args.port, on_ready=lambda: print(
        f"serving {', '.join(sources)} on http://{args.host}:{args.port}/ with {scale} Ray Serve replica(s) "
        f"(Ray connected in {startup:.1f} s; API docs: /docs)", file=sys.stderr, flush=True))
    return 0
