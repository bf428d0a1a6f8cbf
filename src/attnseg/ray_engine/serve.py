"""`attnseg serve --engine ray`: the same FastAPI app (page, API, limits) as Ray Serve replicas.

Each replica runs `build_app(replica_id)` once when it starts, so it loads the models once and answers with
its own batcher, limits and /metrics (labelled with the replica, which every response names in
X-Attnseg-Replica). Ray Serve's proxy spreads requests over the replicas and replaces one whose process dies.
"""
from __future__ import annotations

import time

from . import require_ray

APP_NAME = "attnseg"


class _Ingress:
    """The deployment's class: Ray Serve calls `__serve_build_asgi_app__` once in each replica, after the
    constructor, and serves the app it returns."""

    def __init__(self, build_app):
        self.build_app = build_app

    def __serve_build_asgi_app__(self):
        from ray import serve

        ctx = serve.get_replica_context()
        rid = getattr(getattr(ctx, "replica_id", None), "unique_id", None) or getattr(ctx, "replica_tag", "replica")
        return self.build_app(str(rid))


def deployment(build_app, replicas: int, max_replicas: int | None = None, cpus: float = 1.0, gpus: float = 0.0,
               max_ongoing: int = 32):
    """The Ray Serve application: `replicas` copies (autoscaled up to `max_replicas` on ongoing requests when
    given), each reserving `cpus` CPUs and `gpus` GPUs and taking at most `max_ongoing` requests at a time
    (more wait in Ray Serve's queue)."""
    require_ray()
    from ray import serve

    scale = ({"autoscaling_config": {"min_replicas": replicas, "max_replicas": max_replicas,
                                     "target_ongoing_requests": 2}}
             if max_replicas and max_replicas > replicas else {"num_replicas": replicas})
    cls = serve.ingress()(_Ingress)
    dep = serve.deployment(cls, name=APP_NAME, max_ongoing_requests=max_ongoing, health_check_period_s=2,
                           ray_actor_options={"num_cpus": cpus, **({"num_gpus": gpus} if gpus else {})}, **scale)
    return dep.bind(build_app)


def run(app, host: str, port: int, on_ready=None) -> None:
    """Start Ray Serve's HTTP proxy on host:port, deploy `app` and wait (until Ctrl-C, then shut it down)."""
    require_ray()
    from ray import serve

    serve.start(http_options={"host": host, "port": port})
    serve.run(app, name=APP_NAME, route_prefix="/", blocking=False)
    if on_ready is not None:
        on_ready()
    try:
        while True:
            time.sleep(1.0)
    except KeyboardInterrupt:
        pass
    finally:
        serve.shutdown()
