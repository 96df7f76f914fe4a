"""`lensforge serve`: a web page and a JSON REST API over the trained models (FastAPI + uvicorn).

    from lensforge.serve import load_models, create_app
    app = create_app(load_models(["runs/demo"]))

Modules: adapters (one class per task: options, run), pool (bounded workers, 503 on timeout),
app (routes, errors, upload limit), server (CLI entry, background server for tests), static/ (the page).
"""
from .adapters import ADAPTERS, Adapter, Output, Upload, load_model, register
from .app import create_app
from .pool import Busy, WorkerPool
from .server import load_models, start_background

__all__ = ["ADAPTERS", "Adapter", "Busy", "Output", "Upload", "WorkerPool", "create_app", "load_model",
           "load_models", "register", "start_background"]
