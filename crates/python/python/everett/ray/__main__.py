"""`python -m everett.ray`: the everett Ray Serve application on a local Ray instance, or on a
running cluster with `--address`. The flags that `everett serve` has keep their names."""

import argparse
import signal
import sys
import threading

import ray
from ray import serve

from .app import AppConfig, build_app


def parse(argv):
    ap = argparse.ArgumentParser(prog="python -m everett.ray", description=__doc__)
    ap.add_argument("--model", default=None, help="a GGUF file (default: the default model)")
    ap.add_argument("--replicas", type=int, default=1)
    ap.add_argument("--threads-per-replica", type=int, default=1,
                    help="each replica's CPUs and compute threads")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--address", default=None,
                    help="a running Ray cluster to join (e.g. HEAD:6379 or auto)")
    ap.add_argument("--kv-tokens", type=int, default=16384)
    ap.add_argument("--max-running", type=int, default=64)
    ap.add_argument("--kv-type", default="f16", choices=["f16", "f32", "q8_0", "q4_0"])
    ap.add_argument("--served-model-name", default=None)
    ap.add_argument("--api-key", default=None)
    ap.add_argument("--max-seqs-per-request", type=int, default=256)
    ap.add_argument("--lenient-fields", action="store_true")
    ap.add_argument("--routing", default="affinity", choices=["affinity", "pow2"],
                    help="prefix-cache affinity, or Ray's power-of-two choices")
    ap.add_argument("--imbalanced-threshold", type=int, default=32,
                    help="affinity yields when its replica's queue is this much longer")
    ap.add_argument("--min-replicas", type=int, default=None,
                    help="with --max-replicas: autoscale between them")
    ap.add_argument("--max-replicas", type=int, default=None)
    ap.add_argument("--target-ongoing-requests", type=float, default=16)
    a = ap.parse_args(argv)
    if (a.min_replicas is None) != (a.max_replicas is None):
        ap.error("--min-replicas and --max-replicas go together")
    if a.replicas < 1 or a.threads_per_replica < 1:
        ap.error("--replicas and --threads-per-replica must be at least 1")
    return a


def config(a) -> AppConfig:
    autoscaling = None
    if a.min_replicas is not None:
        autoscaling = {"min_replicas": a.min_replicas, "max_replicas": a.max_replicas,
                       "initial_replicas": max(a.min_replicas, min(a.replicas, a.max_replicas)),
                       "target_ongoing_requests": a.target_ongoing_requests}
    return AppConfig(
        model=a.model,
        replicas=a.replicas,
        threads_per_replica=a.threads_per_replica,
        llm={"kv_tokens": a.kv_tokens, "max_running": a.max_running, "kv_type": a.kv_type},
        http={"model_name": a.served_model_name, "api_key": a.api_key,
              "max_seqs_per_request": a.max_seqs_per_request,
              "lenient_fields": a.lenient_fields},
        routing=a.routing,
        router_kwargs={"imbalanced_threshold": a.imbalanced_threshold},
        autoscaling=autoscaling,
        max_ongoing_requests=a.max_running,
    )


def main(argv=None):
    a = parse(sys.argv[1:] if argv is None else argv)
    ray.init(address=a.address)
    serve.start(http_options={"host": a.host, "port": a.port})
    serve.run(build_app(config(a)), name="everett", route_prefix="/")
    print(f"everett on Ray: serving on {a.host}:{a.port}", flush=True)
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    serve.shutdown()


if __name__ == "__main__":
    main()
