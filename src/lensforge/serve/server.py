"""Starting the server: load each model once, build the app, run uvicorn (the CLI), or run it on
a background thread (tests and benchmarks, loopback only)."""
from __future__ import annotations

import os
import sys
import threading
from dataclasses import dataclass

from ..specs.serve import LOOPBACK, TOKEN_ENV, ServeOptions
from .adapters import Adapter, load_model, parse_model_args
from .app import create_app
from .pool import WorkerPool, set_threads


def load_models(args: list[str], device: str = "auto") -> list[Adapter]:
    """Every RUN_DIR_OR_WEIGHTS (or NAME=PATH) loaded once; the first bad one is a one-line error."""
    return [load_model(name, path, device) for name, path in parse_model_args(args)]


def build(o: ServeOptions, models: list[Adapter] | None = None):
    """(app, models) for validated options; the token falls back to $LENSFORGE_SERVE_TOKEN."""
    models = models if models is not None else load_models(o.models, o.device)
    set_threads(o.workers, o.threads)
    token = o.token if o.token is not None else (os.environ.get(TOKEN_ENV) or None)
    pool = WorkerPool(o.workers, o.queue, o.timeout)
    return create_app(models, token=token, max_upload_mb=o.max_upload_mb, pool=pool), models


def exposure_warning(host: str) -> str | None:
    if host in LOOPBACK:
        return None
    return (f"warning: binding to {host}: every machine that can reach this address can use the models"
            + ("" if (os.environ.get(TOKEN_ENV)) else " (consider --token)"))


def listen(host: str, port: int):
    """A listening socket, so that a taken port or an unknown host is one line, not uvicorn's log."""
    import socket

    from ..errors import UsageError

    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as e:
        raise UsageError(f"--host {host}: cannot listen there ({e.strerror or e})") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(2048)
    except OSError as e:
        sock.close()
        raise UsageError(f"--host {host} --port {port}: cannot listen there ({e.strerror or e})") from None
    return sock


def serve(o: ServeOptions) -> None:
    """Blocking: the `lensforge serve` verb."""
    import uvicorn

    app, models = build(o)
    warning = exposure_warning(o.host)
    if warning:
        print(warning, file=sys.stderr)
    sock = listen(o.host, o.port)
    port = sock.getsockname()[1]
    for m in models:
        print(f"model {m.name}: {m.task} ({m.ckpt.get('model_name')}) from {m.path}")
    host = f"[{o.host}]" if ":" in o.host else o.host
    print(f"serving {len(models)} model(s) on http://{host}:{port}/  (API docs: /docs; Ctrl-C stops)", flush=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    server.run(sockets=[sock])


@dataclass
class Background:
    """A server on a thread of this process: `url`, and `stop()`."""

    server: object
    thread: threading.Thread
    url: str

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def start_background(app, host: str = "127.0.0.1", port: int = 0, timeout: float = 30.0) -> Background:
    """Run `app` under uvicorn on a thread; returns once it accepts connections (or raises)."""
    import time

    import uvicorn

    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None   # only the main thread may; and it is not ours
    t = threading.Thread(target=server.run, name="lensforge-serve-test", daemon=True)
    t.start()
    end = time.monotonic() + timeout
    while not server.started:        # bounded: startup either finishes or the thread dies
        if not t.is_alive() or time.monotonic() > end:
            raise RuntimeError("the server did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    return Background(server, t, f"http://{host}:{port}")


def spawn(args: list[str], timeout: float = 180.0, env: dict | None = None):
    """`python -m lensforge serve ARGS --port 0` as a child process (benchmarks, the CLI test):
    returns (process, base URL ending in "/", its first lines) once it says where it listens;
    raises with its output if it exits or stays silent for `timeout` seconds."""
    import queue
    import subprocess

    proc = subprocess.Popen([sys.executable, "-m", "lensforge", "serve", *args, "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})
    lines: queue.Queue = queue.Queue()

    def read() -> None:     # a thread, so a line is seen as soon as it is printed (no select on buffers)
        try:
            for line in proc.stdout:
                lines.put(line)
        except (ValueError, OSError):    # closed by the caller
            pass
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    seen: list[str] = []
    try:
        while True:
            line = lines.get(timeout=timeout)
            if line is None:
                break
            seen.append(line)
            if line.startswith("serving"):
                return proc, line.split(" on ")[1].split()[0], seen
    except queue.Empty:
        pass
    proc.kill()
    err = proc.stderr.read()
    proc.wait(30)
    raise RuntimeError(f"lensforge serve did not start: {''.join(seen) + err}")
