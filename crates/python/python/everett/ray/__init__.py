"""everett on Ray Serve: many engine replicas behind one OpenAI-compatible endpoint, requests
routed by prefix-cache affinity. Needs the `ray` extra (`pip install 'everett[ray]'`).

    python -m everett.ray --replicas 2 --threads-per-replica 1 --port 8000

or, from Python, `serve.run(build_app(AppConfig(replicas=2)))`.
"""

from .app import AppConfig, EngineReplica, Ingress, build_app, routing_key
from .router import PrefixAffinityRouter

__all__ = ["AppConfig", "EngineReplica", "Ingress", "PrefixAffinityRouter", "build_app",
           "routing_key"]
