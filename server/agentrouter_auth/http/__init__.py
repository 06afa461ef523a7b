"""The HTTP listener: protocol dispatch, the representation of answers, health and metrics.

- `app`: the ASGI app (lifespan, and dispatch by the table of `dispatch`);
- `dispatch`: which handler answers a request: by path prefix and content type, one table;
- `recording`: the middleware that records every request (metrics, access log);
- `representation`: every response header of every answer of the port, for every protocol
  (ETag, caching, gzip, CORS, media type; Connect and gRPC-Web's CORS and the errors their
  adapter answers itself; the listener's own answers and refusals);
- `negotiation`: what a REST request asks of a representation (Accept, Accept-Encoding,
  If-None-Match);
- `health`, `metrics_endpoint`: /healthz, /readyz and /metrics;
- `head`: what every request head must be (at most 64 KiB, one valid Host) before dispatch;
- `limits`: the request body deadline around the whole app.
"""
