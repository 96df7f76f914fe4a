"""`lensforge serve MODEL...`: options of the web page + REST API server (torch-free).

`run` is the default verb, so `lensforge serve runs/demo` is `lensforge serve run runs/demo`.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..options import REQUIRED, TaskCLI, Verb, option
from .common import device_option

NETWORK = "network"
LIMITS = "limits"
#: Addresses that only this machine can reach; any other bind prints a warning.
LOOPBACK = ("127.0.0.1", "localhost", "::1")
TOKEN_ENV = "LENSFORGE_SERVE_TOKEN"


@dataclass(kw_only=True)
class ServeOptions:
    models: list[str] = option(REQUIRED, "run folders or weights files to serve; NAME=PATH names a model "
                               "(default name: the run folder's name)", positional=True, nargs="+",
                               metavar="RUN_DIR_OR_WEIGHTS")
    host: str = option("127.0.0.1", "address to bind; anything but loopback exposes the models to the network",
                       group=NETWORK)
    port: int = option(8000, "TCP port (0 = any free port, printed at start)", low=0, high=65535, group=NETWORK)
    token: str | None = option(None, "require 'Authorization: Bearer TOKEN' on /api/* (except /api/health)",
                               group=NETWORK, default_help=f"${TOKEN_ENV}, else no token")
    # 20 MB holds any phone photo (a 48 MP JPEG is ~15 MB); the decoded-pixel guard is separate.
    max_upload_mb: float = option(20.0, "largest request body in MB (larger uploads get 413)", low=0.001,
                                  high=1024.0, group=LIMITS)
    timeout: float = option(30.0, "seconds a request may wait for and run on a worker before it gets 503",
                            low=0.001, high=3600.0, group=LIMITS)
    workers: int = option(1, "models run on this many threads at once; more requests queue", low=1, high=64,
                          group=LIMITS)
    threads: int | None = option(None, "torch threads per worker", low=1, high=256, group=LIMITS,
                                 default_help="CPU cores / workers")
    queue: int = option(64, "requests allowed to wait for a worker; beyond that 503 at once", low=0, high=100_000,
                        group=LIMITS)
    device: str = device_option()

    def validate(self) -> None:
        from ..errors import UsageError

        if not self.host.strip():
            raise UsageError("--host: give an address such as 127.0.0.1")
        if self.token is not None and not self.token.strip():
            raise UsageError("--token: an empty token would protect nothing")


CLI = TaskCLI("serve", "web page and REST API for trained models (FastAPI, uvicorn)", (
    Verb("run", "serve RUN_DIR_OR_WEIGHTS... on one page and a JSON API (the default verb: `lensforge serve "
         "RUN ...`)", (ServeOptions,), "lensforge.cli.serve:run"),
), default_verb="run")
