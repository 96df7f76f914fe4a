"""API fuzzing of `lensforge serve`: schemathesis generates requests from /openapi.json (examples,
coverage of boundaries and invalid values, random fuzzing) against a real server on 127.0.0.1 and
checks every response: no 5xx, status codes / content types / bodies as the schema says, invalid
data rejected, valid data accepted, auth enforced.

    python bench/serve_fuzz.py runs/demo                    # make demo first
    python bench/serve_fuzz.py runs/demo RUN2 --max-examples 200 --token secret

Writes bench/results/serve_fuzz.json (summary) and serve_fuzz.txt (schemathesis's own report).
Run it through `flock /tmp/lensforge-cpu.lock` so timings of other benchmarks are not disturbed.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


#: "Schema-valid data is accepted" cannot hold for an image upload: the schema can say "binary"
#: but not "a decodable image", nor which options each model takes (the route serves every model),
#: so random bytes or random option names are schema-valid and rightly get 422/400. Every other
#: check runs, including not_a_server_error, response_schema_conformance, negative_data_rejection
#: and ignored_auth.
EXCLUDED = "positive_data_acceptance"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+", help="run folders or weights (NAME=PATH allowed)")
    ap.add_argument("--max-examples", type=int, default=100, help="hypothesis examples per operation and phase")
    ap.add_argument("--token", default=None, help="also start the server with this bearer token")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "serve_fuzz.json"))
    a = ap.parse_args()

    from lensforge.serve.server import spawn

    cli = shutil.which("schemathesis", path=str(Path(sys.executable).parent)) or shutil.which("schemathesis")
    if cli is None:
        sys.exit("schemathesis is not installed (pip install schemathesis)")
    runs = []
    for token in ([None, a.token] if a.token else [None]):
        args = [*a.models, "--timeout", "60"] + (["--token", token] if token else [])
        proc, url, _ = spawn(args, env={"OMP_NUM_THREADS": "1"})
        try:
            cmd = [cli, "run", url + "openapi.json", "--checks", "all", "--exclude-checks", EXCLUDED, "--phases", "examples,coverage,fuzzing,stateful",
                   "--max-examples", str(a.max_examples), "--seed", str(a.seed), "--workers", "1",
                   "--request-timeout", "90", "--suppress-health-check", "too_slow,data_too_large",
                   "--no-color"] + (["-H", f"Authorization: Bearer {token}"] if token else [])
            t0 = time.perf_counter()
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=3000)
            seconds = time.perf_counter() - t0
        finally:
            proc.terminate()
            proc.wait(30)
            server_err = proc.stderr.read()
        report = res.stdout + res.stderr
        summary = _summary(report)
        runs.append({"token": bool(token), "exit_code": res.returncode, "seconds": round(seconds, 1),
                     "server_tracebacks": server_err.count("Traceback"), **summary,
                     "command": " ".join(cmd).replace(token or "\0", "<token>")})
        txt = Path(a.out).with_suffix(".txt") if not token else Path(a.out).with_name(Path(a.out).stem + "_token.txt")
        txt.parent.mkdir(parents=True, exist_ok=True)
        txt.write_text(report.replace(token or "\0", "<token>"))
        print(f"token={bool(token)}: exit {res.returncode}, {summary}, server tracebacks "
              f"{runs[-1]['server_tracebacks']} ({seconds:.0f} s)")
    out = {"what": "schemathesis --checks all against lensforge serve on 127.0.0.1", "excluded_checks": EXCLUDED,
           "models": a.models, "schemathesis": _version(cli), "python": platform.python_version(),
           "cpus": os.cpu_count(), "load_average_at_end": os.getloadavg(), "runs": runs,
           "passed": all(r["exit_code"] == 0 and r["server_tracebacks"] == 0 and not r["failures"] for r in runs)}
    Path(a.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {a.out}")
    return 0 if out["passed"] else 1


def _summary(report: str) -> dict:
    """Counts from schemathesis's summary ('Test cases: 212 generated, 212 passed, 6 skipped',
    '... 2 found 2 unique failures', 'No issues found')."""
    tail = report.split("SUMMARY")[-1]
    out: dict = {}
    m = re.search(r"Test cases:\s*(\d+) generated(.*)", tail)
    if m:
        out["test_cases"] = int(m.group(1))
        for n, key in re.findall(r"(\d+) (passed|skipped|unique failures)", m.group(2)):
            out[key.replace(" ", "_")] = int(n)
    lines = [l.strip("= ") for l in tail.strip().splitlines() if l.strip("= ")]
    out["verdict"] = lines[-1] if lines else ""          # "No issues found in 9s" / "1 warning in 10s" / "2 failures ..."
    out["failures"] = "failure" in out["verdict"]
    out["server_errors_found"] = len(re.findall(r"Server error", report))
    return out


def _version(cli: str) -> str:
    try:
        return subprocess.run([cli, "--version"], capture_output=True, text=True, timeout=60).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"


if __name__ == "__main__":
    sys.exit(main())
