#!/usr/bin/env python3
"""Soak test of `everett serve`: mixed load for a fixed time, then the checks the fault-tolerance
issue names. Standard library only.

It starts the server itself (so it can read the server's RSS), then runs WORKERS client threads
for DURATION seconds, each drawing one scenario at a time:
  * completions and chat, JSON and SSE, n of 1 to 3, random priorities;
  * greedy `lookahead` requests and small explorations;
  * 10 % of streams disconnect after their first chunk;
  * 5 % malformed requests (bad JSON, unknown fields, absurd values), which must get 4xx;
and a burst thread that sends bursts over `--max-waiting` (429s are expected there).
A fairness probe then sends one big request (256 prompts) and, beside it, a 3-token request,
and times the small one.

At the end: no 5xx anywhere, the server's metrics show nothing running or waiting and an empty
KV cache, and RSS grew less than 5 % between 20 % of the run and its end (minute 2 and minute
10 of the ten-minute benchmark). Prints one JSON summary; exits 1 when a check fails.

  tools/soak/soak.py --everett target/release/everett --model M.gguf --duration 600

With --functional (CI's short run, beside other tests on a shared machine) the timing and memory
figures are reported but not checked: speed and memory are benchmarks, never test assertions.
"""

import argparse
import http.client
import json
import os
import random
import re
import socket
import subprocess
import sys
import threading
import time


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--everett", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--duration", type=float, default=600.0)
    p.add_argument("--workers", type=int, default=12)
    p.add_argument("--max-waiting", type=int, default=256)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--functional", action="store_true",
                   help="check behaviour only; report RSS growth and fairness timing")
    return p.parse_args()


class Server:
    def __init__(self, everett, model, max_waiting):
        self.proc = subprocess.Popen(
            [everett, "serve", "--model", model, "--port", "0", "--max-waiting", str(max_waiting),
             "--max-running", "32"],
            stderr=subprocess.PIPE, text=True)
        self.log_tail = []
        for line in self.proc.stderr:
            m = re.search(r" ready on http://(\S+)", line)
            if m:
                self.host, self.port = m.group(1).rsplit(":", 1)
                break
        else:
            raise SystemExit("the server exited before it was ready")
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self):
        for line in self.proc.stderr:
            self.log_tail = (self.log_tail + [line])[-50:]

    def rss_kb(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.counts = {}
        self.server_errors = []

    def add(self, kind, status, detail=""):
        with self.lock:
            key = f"{kind}:{status}"
            self.counts[key] = self.counts.get(key, 0) + 1
            if status >= 500:
                self.server_errors.append(f"{kind} {status} {detail[:200]}")


def request(srv, method, path, body=None, timeout=120):
    """(status, body text) of one request on a fresh connection."""
    conn = http.client.HTTPConnection(srv.host, int(srv.port), timeout=timeout)
    data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
    conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    text = r.read().decode("utf-8", "replace")
    conn.close()
    return r.status, text


def stream_and_maybe_drop(srv, path, body, drop):
    """Streams an SSE reply; with `drop`, closes the socket after the first chunk."""
    conn = http.client.HTTPConnection(srv.host, int(srv.port), timeout=120)
    conn.request("POST", path, body=json.dumps(body).encode(),
                 headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    if r.status != 200:
        text = r.read().decode("utf-8", "replace")
        conn.close()
        return r.status, text
    if drop:
        r.readline()
        conn.sock.shutdown(socket.SHUT_RDWR)
        conn.close()
        return 200, "dropped"
    text = r.read().decode("utf-8", "replace")
    conn.close()
    if "[DONE]" not in text:
        return 599, "stream ended without [DONE]: " + text[-200:]
    if '"error"' in text:
        return 598, "error event in stream: " + text[-200:]
    return 200, text


MALFORMED = [
    b"{not json",
    json.dumps({"prompt": "a", "frobnicate": 1}).encode(),
    json.dumps({"prompt": "a", "n": 0}).encode(),
    json.dumps({"prompt": "a", "max_tokens": -3}).encode(),
    json.dumps({"prompt": "a", "logit_bias": {"abc": 1}}).encode(),
    json.dumps({"prompt": ["a"] * 300}).encode(),
    json.dumps({"messages": []}).encode(),
]

PROMPTS = ["Once upon a time", "The capital of France is", "def fib(n):", "A list of fruits:",
           "Explain gravity to a child.", "In 1969, astronauts", "Roses are red,"]


def scenario(srv, rng, stats):
    x = rng.random()
    prompt = rng.choice(PROMPTS)
    prio = rng.choice([0, 0, 0, -1, 5])
    if x < 0.05:
        body = rng.choice(MALFORMED)
        path = "/v1/chat/completions" if b"messages" in body else "/v1/completions"
        s, t = request(srv, "POST", path, body)
        stats.add("malformed", s, t)
        if s < 400 or s >= 500:
            stats.add("malformed-not-4xx", 599 if s < 400 else s, t)
        return
    if x < 0.35:
        body = {"prompt": prompt, "max_tokens": rng.randint(4, 24), "n": rng.randint(1, 3),
                "temperature": rng.choice([0, 0.8]), "priority": prio}
        s, t = request(srv, "POST", "/v1/completions", body)
        stats.add("completion", s, t)
    elif x < 0.45:
        body = {"messages": [{"role": "user", "content": prompt}],
                "max_tokens": rng.randint(4, 24)}
        s, t = request(srv, "POST", "/v1/chat/completions", body)
        stats.add("chat", s, t)
    elif x < 0.80:
        chat = rng.random() < 0.5
        path = "/v1/chat/completions" if chat else "/v1/completions"
        body = {"max_tokens": rng.randint(8, 32), "stream": True, "priority": prio,
                "n": rng.randint(1, 2)}
        if chat:
            body["messages"] = [{"role": "user", "content": prompt}]
        else:
            body["prompt"] = prompt
        drop = rng.random() < 0.10
        s, t = stream_and_maybe_drop(srv, path, body, drop)
        stats.add("stream-dropped" if drop else "stream", s, t)
    elif x < 0.92:
        body = {"prompt": prompt, "max_tokens": 16, "temperature": 0, "lookahead": True}
        s, t = request(srv, "POST", "/v1/completions", body)
        stats.add("lookahead", s, t)
    else:
        body = {"prompt": prompt, "width": 4, "branches": 2, "steps": 4}
        s, t = request(srv, "POST", "/v1/explore", body)
        stats.add("explore", s, t)


def burst(srv, n, stats):
    def one():
        s, t = request(srv, "POST", "/v1/completions",
                       {"prompt": "burst", "max_tokens": 4, "n": 2})
        stats.add("burst", s, t)
    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def metric(text, name):
    m = re.search(r"^" + re.escape(name) + r" (\S+)$", text, re.M)
    return float(m.group(1)) if m else None


def fairness(srv):
    """Seconds a 3-token request takes beside a 256-prompt one, and the big one's status."""
    out = {}

    def big():
        t0 = time.time()
        s, _ = request(srv, "POST", "/v1/completions",
                       {"prompt": ["Tell me a story."] * 256, "max_tokens": 32,
                        "ignore_eos": True}, timeout=600)
        out["big"] = (s, time.time() - t0)
    t = threading.Thread(target=big)
    t.start()
    time.sleep(0.5)
    t0 = time.time()
    s, _ = request(srv, "POST", "/v1/completions", {"prompt": "Hi", "max_tokens": 3})
    small = time.time() - t0
    # The hostile request: refused at once, naming its numbers.
    t1 = time.time()
    s_huge, text = request(srv, "POST", "/v1/completions",
                           {"prompt": ["a"] * 256, "n": 128, "max_tokens": 3})
    huge = time.time() - t1
    t.join()
    return {"small_status": s, "small_seconds": round(small, 3),
            "big_status": out["big"][0], "big_seconds": round(out["big"][1], 3),
            "huge_status": s_huge, "huge_seconds": round(huge, 3),
            "huge_names_numbers": "32768" in text}


def main():
    a = parse_args()
    srv = Server(a.everett, a.model, a.max_waiting)
    stats = Stats()
    rng_master = random.Random(a.seed)
    stop = time.time() + a.duration
    rss = []

    def worker(seed):
        rng = random.Random(seed)
        while time.time() < stop:
            try:
                scenario(srv, rng, stats)
            except (OSError, http.client.HTTPException) as e:
                stats.add("transport", 597, repr(e))

    def bursts():
        # The first burst before the 20 % mark that RSS growth is measured from.
        time.sleep(a.duration / 10)
        while time.time() < stop:
            burst(srv, a.max_waiting // 2 + 20, stats)
            time.sleep(min(15.0, a.duration / 4))

    threads = [threading.Thread(target=worker, args=(rng_master.random(),))
               for _ in range(a.workers)]
    threads.append(threading.Thread(target=bursts))
    start = time.time()
    for t in threads:
        t.start()
    while time.time() < stop:
        rss.append((round(time.time() - start, 1), srv.rss_kb()))
        time.sleep(min(5.0, a.duration / 20))
    for t in threads:
        t.join()
    rss.append((round(time.time() - start, 1), srv.rss_kb()))
    fair = fairness(srv)
    # Settled: nothing running or waiting, every KV block back.
    settled = None
    for _ in range(120):
        _, m = request(srv, "GET", "/metrics")
        vals = {k: metric(m, k) for k in ["everett_requests_running", "everett_requests_waiting",
                                          "everett_kv_usage_ratio",
                                          "everett_engine_restarts_total"]}
        if vals["everett_requests_running"] == 0 and vals["everett_requests_waiting"] == 0 \
                and vals["everett_kv_usage_ratio"] == 0:
            settled = vals
            break
        time.sleep(0.5)
    mark = a.duration * 0.2
    early = [kb for t, kb in rss if t >= mark]
    growth = (rss[-1][1] - early[0]) / early[0] if early else None
    srv.stop()
    checks = {
        "no_5xx": not stats.server_errors,
        "settled": settled is not None,
        "rss_growth_under_5pct": growth is not None and growth < 0.05,
        "malformed_all_4xx": not any(k.startswith("malformed-not-4xx") for k in stats.counts),
        "small_beside_big_under_2s": fair["small_status"] == 200 and fair["small_seconds"] < 2.0,
        "huge_refused_400": fair["huge_status"] == 400 and fair["huge_names_numbers"],
        "bursts_got_429": any(k == "burst:429" for k in stats.counts),
    }
    if a.functional:
        for timed in ("rss_growth_under_5pct", "small_beside_big_under_2s", "bursts_got_429"):
            checks.pop(timed)
        checks["small_beside_big_answered"] = fair["small_status"] == 200
    summary = {
        "duration_s": a.duration, "workers": a.workers, "max_waiting": a.max_waiting,
        "requests": sum(stats.counts.values()), "by_kind_status": dict(sorted(stats.counts.items())),
        "server_errors": stats.server_errors[:20], "rss_kb": rss,
        "rss_growth_after_20pct": None if growth is None else round(growth, 4),
        "fairness": fair, "settled": settled, "checks": checks,
        "server_log_tail": srv.log_tail[-5:] if not all(checks.values()) else [],
    }
    print(json.dumps(summary, indent=1))
    sys.exit(0 if all(checks.values()) else 1)


if __name__ == "__main__":
    main()
