"""The HTTP API (FastAPI): the app, its routes, request and response bodies, uploads,
authentication, the error handlers and the Prometheus metrics."""
