"""The HTTP API of `iacloud serve`: a second front end beside the CLI, calling the same engine
functions. `create_app` builds the FastAPI application (app.py); routes.py holds the routes,
jobs.py runs operations in worker threads, store.py keeps the service tables."""

from __future__ import annotations

from iacloud.api.app import ServeSettings, create_app

__all__ = ["ServeSettings", "create_app"]
