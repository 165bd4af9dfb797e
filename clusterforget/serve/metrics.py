"""``GET /metrics`` in Prometheus' text format (prometheus-client), one registry per app.

Requests and errors by endpoint (the route's path template, never a raw URL) and status code, a latency
histogram by endpoint, rows scored, and, read from the holder at each scrape: the model version served, its
export time, reloads and refused exports.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from .._compat import optional


def _export_time(info: dict[str, Any]) -> float:
    stamp = info.get("exported_at")
    if not isinstance(stamp, str):
        return float("nan")
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return float("nan")


def instrument(app: Any, holder: Any, router: Any) -> Any:
    """Count every request of ``app`` and serve ``/metrics`` on ``router`` (the one behind the token). Returns
    the counting middleware (an ASGI class), for routes served past ``app``'s stack."""
    prom = optional("prometheus_client", "the service's /metrics")
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
    from starlette.responses import Response

    registry = prom.CollectorRegistry()
    requests = prom.Counter("clusterforget_requests", "HTTP requests by endpoint and status code",
                            ["endpoint", "method", "code"], registry=registry)
    errors = prom.Counter("clusterforget_errors", "HTTP requests answered with status >= 400",
                          ["endpoint", "method", "code"], registry=registry)
    latency = prom.Histogram("clusterforget_request_seconds", "time to answer a request", ["endpoint"],
                             registry=registry)
    rows = prom.Counter("clusterforget_rows_scored", "rows scored, by endpoint", ["endpoint"], registry=registry)

    class ModelCollector:
        def collect(self) -> Any:
            cur = holder.current
            yield GaugeMetricFamily("clusterforget_model_version", "model version served", value=cur.version)
            yield GaugeMetricFamily("clusterforget_model_exported_at_seconds",
                                    "export time of the model served (Unix time)", value=_export_time(cur.info))
            yield GaugeMetricFamily("clusterforget_model_loaded_at_seconds", "when it was swapped in (Unix time)",
                                    value=cur.loaded_at)
            yield CounterMetricFamily("clusterforget_reloads", "new models swapped in", value=holder.reloads)
            yield CounterMetricFamily("clusterforget_refusals", "exports refused (the old model kept serving)",
                                      value=holder.refusals)

    registry.register(ModelCollector())
    # each label set's child, looked up once (created at its first use, as labels() creates it): prometheus-client's
    # labels() takes a lock and builds a tuple per call, a measurable share of a one-row request
    children: dict[tuple, Any] = {}

    def child(metric: Any, *labels: str) -> Any:
        got = children.get((metric, labels))
        if got is None:
            got = children[(metric, labels)] = metric.labels(*labels)
        return got

    class Count:
        """Pure ASGI (not ``BaseHTTPMiddleware``, which runs every request through extra tasks and streams: a
        large share of a one-row request's time)."""

        def __init__(self, app: Any):
            self.app = app

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                return await self.app(scope, receive, send)
            t0 = time.perf_counter()
            status = [500]  # what the client gets if the app raises

            async def sent(message: Any) -> None:
                if message["type"] == "http.response.start":
                    status[0] = message["status"]
                await send(message)

            try:
                await self.app(scope, receive, sent)
            finally:
                route = scope.get("route")
                endpoint = getattr(route, "path", None) or "unmatched"  # a template: no raw path, no label explosion
                labels = (endpoint, scope["method"], str(status[0]))
                child(requests, *labels).inc()
                if status[0] >= 400:
                    child(errors, *labels).inc()
                child(latency, endpoint).observe(time.perf_counter() - t0)
                n = scope.get("clusterforget.rows", 0)  # set by the endpoint that scored
                if n:
                    child(rows, endpoint).inc(n)

    app.add_middleware(Count)

    @router.get("/metrics", include_in_schema=False)
    def metrics() -> Any:
        return Response(prom.generate_latest(registry), media_type=prom.CONTENT_TYPE_LATEST)

    return Count


__all__ = ["instrument"]
