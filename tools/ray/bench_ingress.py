"""What one Ray Serve ingress costs and carries, for the scaling notes in the README: the
request rate of `GET /v1/models` through the Ray proxy and everett's Ingress (32 client
threads, 10 s: routing and transport only, no engine work), and the latency of one-token
completions, sequentially, through Ray against `everett serve` on the same machine.

    python tools/ray/bench_ingress.py --everett target/release/everett"""

import argparse
import json
import os
import socket
import statistics
import subprocess
import threading
import time
import urllib.request
from urllib.parse import urlunsplit

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import ray  # noqa: E402
from ray import serve  # noqa: E402

from everett.ray import AppConfig, build_app  # noqa: E402


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def local(port):
    """The base of a server listening on loopback `port`."""
    return urlunsplit(("http", f"127.0.0.1:{port}", "", "", ""))


def get_rate(url, seconds=10.0, threads=32):
    count, stop = [0], time.monotonic() + seconds

    def work():
        while time.monotonic() < stop:
            with urllib.request.urlopen(url + "/v1/models", timeout=30) as r:
                r.read()
            count[0] += 1

    ts = [threading.Thread(target=work) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return count[0] / seconds


def one_token_ms(url, n=40):
    body = json.dumps({"model": "everett", "prompt": "Hello there", "max_tokens": 1,
                       "temperature": 0}).encode()
    times = []
    for _ in range(n):
        req = urllib.request.Request(url + "/v1/completions", body,
                                     {"Content-Type": "application/json"})
        t = time.perf_counter()
        with urllib.request.urlopen(req, timeout=30) as r:
            r.read()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--everett", required=True)
    a = ap.parse_args()
    port = free_port()
    direct = subprocess.Popen([a.everett, "serve", "--port", str(port), "--threads", "1",
                               "--served-model-name", "everett"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    direct_url = local(port)
    for _ in range(100):
        try:
            urllib.request.urlopen(direct_url + "/health", timeout=1).read()
            break
        except Exception:
            time.sleep(0.2)
    direct_ms = one_token_ms(direct_url)
    direct_rate = get_rate(direct_url)
    direct.terminate()
    direct.wait()
    ray.init(num_cpus=2)
    rport = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": rport})
    serve.run(build_app(AppConfig(replicas=2, threads_per_replica=1,
                                  http={"model_name": "everett"})), name="everett",
              route_prefix="/")
    ray_url = local(rport)
    ray_ms = one_token_ms(ray_url)
    ray_rate = get_rate(ray_url)
    serve.shutdown()
    print(json.dumps({"one_token_ms": {"everett serve": direct_ms, "ray": ray_ms},
                      "models_rps": {"everett serve": direct_rate, "ray": ray_rate}}))


if __name__ == "__main__":
    main()
