"""Replicas on Ray against one engine, under a shared-prefix workload: 64 requests over 8
system prompts of about 400 tokens (each request a system prompt and its own question), sent by
`everett bench serve` (32 in flight, 64 tokens each, greedy). Configurations, run in turn on one
local Ray instance of this machine's CPUs:
  * 1 replica x 2 threads;
  * 2 replicas x 1 thread, prefix-affinity routing (everett.ray's router);
  * 2 replicas x 1 thread, Ray's default power-of-two routing.
Reports output throughput, TTFT p50/p95 and the prefix-cache hit rate (tokens served from the
replicas' prefix caches over prompt tokens looked up).

    python tools/ray/bench_affinity.py --everett target/release/everett [--rounds 2]

Run it with an interpreter that has the wheel and its `ray` extra installed."""

import argparse
import json
import os
import socket
import statistics
import subprocess
import tempfile
import time

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import ray  # noqa: E402
from ray import serve  # noqa: E402

from everett.ray import AppConfig, build_app  # noqa: E402

TOPICS = ["a public library", "a hospital pharmacy", "a bicycle repair shop", "a city water utility",
          "a mountain hotel", "a railway timetable office", "a school canteen", "a small bakery"]
QUESTIONS = ["What are your opening hours?", "How do I file a complaint?", "Can I pay by card?",
             "Who do I call in an emergency?", "Is there parking nearby?", "Do you deliver?",
             "How long is the waiting time?", "What should I bring with me?"]


def system_prompt(topic):
    rules = " ".join(f"Rule {i}: when a visitor asks about {topic}, answer in plain words, be "
                     f"polite, never invent facts, and keep the reply under three sentences."
                     for i in range(1, 15))
    return f"You are the assistant of {topic}. {rules}\n"


def prompts():
    return [f"{system_prompt(TOPICS[i % 8])}Question: {QUESTIONS[i // 8]}\nAnswer:"
            for i in range(64)]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def replica_stats(expected):
    """Each replica's engine counters, by replica name."""
    handle = serve.get_deployment_handle("EngineReplica", app_name="everett")
    seen = {}
    for _ in range(200):
        st = handle.stats.remote().result()
        seen[st["replica"]] = st
        if len(seen) == expected:
            break
    return seen


def run(binary, cfg, path):
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app(cfg), name="everett", route_prefix="/")
    out = subprocess.run([binary, "bench", "serve", "--url", f"127.0.0.1:{port}", "--prompts",
                          path, "--requests", "64", "--concurrency", "32", "--max-tokens", "64",
                          "--json"], capture_output=True, text=True, check=True)
    report = json.loads(out.stdout)
    stats = replica_stats(cfg.replicas)
    serve.shutdown()
    hit = sum(s["prefix_hit_tokens"] for s in stats.values())
    queried = sum(s["prefix_queried_tokens"] for s in stats.values())
    return {"throughput": report["output_throughput"], "failed": report["failed"],
            "ttft_p50": report["ttft_ms"]["p50"], "ttft_p95": report["ttft_ms"]["p95"],
            "hit_rate": hit / max(queried, 1),
            "per_replica_hits": sorted(s["prefix_hit_tokens"] for s in stats.values())}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--everett", required=True)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--imbalanced-threshold", type=int, default=32)
    ap.add_argument("--only", default=None, help="one configuration's name")
    a = ap.parse_args()
    configs = {
        "1x2": AppConfig(replicas=1, threads_per_replica=2, http={"model_name": "everett"}),
        "2x1 affinity": AppConfig(replicas=2, threads_per_replica=1,
                                  http={"model_name": "everett"},
                                  router_kwargs={"imbalanced_threshold": a.imbalanced_threshold}),
        "2x1 pow2": AppConfig(replicas=2, threads_per_replica=1, routing="pow2",
                              http={"model_name": "everett"}),
    }
    if a.only:
        configs = {a.only: configs[a.only]}
    ray.init(num_cpus=2)
    results = {name: [] for name in configs}
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "prompts.jsonl")
        with open(path, "w") as f:
            f.writelines(json.dumps({"prompt": p}) + "\n" for p in prompts())
        for r in range(a.rounds):
            for name, cfg in configs.items():
                res = run(a.everett, cfg, path)
                results[name].append(res)
                print(f"round {r + 1} {name}: {json.dumps(res)}", flush=True)
                time.sleep(2)
    summary = {name: {k: statistics.median(x[k] for x in rs)
                      for k in ["throughput", "ttft_p50", "ttft_p95", "hit_rate"]}
               for name, rs in results.items()}
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
