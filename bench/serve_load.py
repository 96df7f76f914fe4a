"""Load test of `lensforge serve`: N requests from M concurrent clients per model, on 127.0.0.1.

    make demo                                     # the classifier (runs/demo)
    flock /tmp/lensforge-cpu.lock python bench/serve_load.py runs/demo DENOISER_RUN
    python bench/serve_load.py runs/demo RUN2 --requests 500 --clients 16

For every model: errors (non-200 answers, connection failures), requests/s, p50/p95/p99 latency
as the clients saw it (queueing included). Memory: the server's resident set after a warm-up,
after the first N requests and after a second N; growth per request is the slope of the second
round (the first can still fill allocator caches). Results: bench/results/serve_load.json.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import platform
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def digit_png(k: int = 3, side: int = 96) -> bytes:
    """A scikit-learn digit, dark on white and enlarged: what someone would upload."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    ink = (d.images[int(np.flatnonzero(d.target == k)[0])] / 16 * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(255 - ink).resize((side, side), Image.BILINEAR).save(buf, "PNG")
    return buf.getvalue()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def hammer(url: str, image: bytes, options: dict, n: int, clients: int) -> dict:
    """n requests shared by `clients` threads, each with its own connection; bounded: each thread
    takes requests from a fixed counter until n have been sent."""
    import httpx

    lock = threading.Lock()
    sent = [0]
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    errors: list[str] = []

    def client() -> None:
        with httpx.Client(timeout=300) as c:
            while True:
                with lock:
                    if sent[0] >= n:
                        return
                    sent[0] += 1
                t0 = time.perf_counter()
                try:
                    r = c.post(url, files={"image": ("digit.png", image, "image/png")},
                               data={"options": json.dumps(options)})
                    code = str(r.status_code)
                    ok = r.status_code == 200 and "result" in r.json()
                except (httpx.HTTPError, ValueError) as e:
                    code, ok = type(e).__name__, False
                dt = time.perf_counter() - t0
                with lock:
                    latencies.append(dt)
                    statuses[code] = statuses.get(code, 0) + 1
                    if not ok and len(errors) < 5:
                        errors.append(code)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    lat = sorted(latencies)

    def q(p: float) -> float:
        return round(1000 * lat[min(len(lat) - 1, int(p * len(lat)))], 1)

    return {"requests": len(lat), "clients": clients, "errors": len(lat) - statuses.get("200", 0),
            "status_counts": statuses, "first_errors": errors, "seconds": round(wall, 2),
            "requests_per_s": round(len(lat) / wall, 1), "p50_ms": q(0.50), "p95_ms": q(0.95), "p99_ms": q(0.99),
            "max_ms": round(1000 * lat[-1], 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+", help="run folders or weights files (NAME=PATH allowed)")
    ap.add_argument("--requests", type=int, default=500)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--workers", type=int, default=1, help="the server's --workers")
    ap.add_argument("--options", default="{}", help='JSON options per model name, e.g. \'{"denoise": {"add_noise": 0.3}}\'')
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "serve_load.json"))
    a = ap.parse_args()
    per_model_options = json.loads(a.options)

    import httpx

    from lensforge.serve.server import spawn

    load_start = os.getloadavg()
    proc, url, lines = spawn([*a.models, "--workers", str(a.workers), "--timeout", "600", "--queue", "10000"])
    try:
        models = httpx.get(url + "api/models", timeout=60).json()
        image = digit_png()
        for m in models:    # warm-up: first calls allocate caches and threads
            opts = per_model_options.get(m["name"], {})
            hammer(url + f"api/models/{m['name']}/predict", image, opts, 20, 4)
        rss = {"after_warmup_mb": round(rss_mb(proc.pid), 1)}
        results = {}
        for m in models:
            opts = per_model_options.get(m["name"], {})
            results[m["name"]] = {"task": m["task"], "model": m["model"], "options": opts,
                                  **hammer(url + f"api/models/{m['name']}/predict", image, opts, a.requests, a.clients)}
            print(f"{m['name']} ({m['task']}): {results[m['name']]}", flush=True)
        rss["after_round_1_mb"] = round(rss_mb(proc.pid), 1)
        second = {m["name"]: hammer(url + f"api/models/{m['name']}/predict", image,
                                    per_model_options.get(m["name"], {}), a.requests, a.clients) for m in models}
        rss["after_round_2_mb"] = round(rss_mb(proc.pid), 1)
        n2 = sum(s["requests"] for s in second.values())
        rss["growth_per_request_round_2_bytes"] = round((rss["after_round_2_mb"] - rss["after_round_1_mb"])
                                                        * 1024 * 1024 / max(1, n2), 1)
        for name, s in second.items():
            results[name]["round_2"] = {k: s[k] for k in ("requests", "errors", "requests_per_s", "p50_ms", "p95_ms")}
        health = httpx.get(url + "api/health", timeout=60).json()
    finally:
        proc.terminate()
        proc.wait(60)
        err = proc.stderr.read()
    out = {"what": "lensforge serve under load: POST /api/models/{name}/predict with a 96x96 PNG digit, "
                   "127.0.0.1, keep-alive clients",
           "command": "python bench/serve_load.py " + " ".join(sys.argv[1:]),
           "server": {"workers": a.workers, "cpus": os.cpu_count(), "python": platform.python_version(),
                      "health_at_end": health, "tracebacks": err.count("Traceback")},
           "load_average_start": load_start, "load_average_end": os.getloadavg(),
           "models": results, "memory": rss}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(rss), f"\nwrote {a.out}")
    bad = sum(r["errors"] + r["round_2"]["errors"] for r in results.values()) + out["server"]["tracebacks"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
