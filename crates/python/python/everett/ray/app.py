"""The Ray Serve application: `EngineReplica` deployments, each an in-process everett engine
answering the OpenAI routes of `everett serve` through the server crate's own router
(`LLM.http_app`), behind one `Ingress` that reads the request, derives its routing key and
hands it to a replica chosen by `PrefixAffinityRouter` (or Ray's default power-of-two router).
Ray Serve does the rest: replicas, their CPUs, autoscaling, replacing a replica that dies.

The ingress parses nothing but the routing key: validation, errors and SSE are the engine
replica's, byte for byte what `everett serve` answers. A replica that fails before answering
gets the client a 503 in the server's error shape; one that fails mid-stream ends the stream.
"""

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from ray import serve
from ray.serve.config import RequestRouterConfig
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from .router import PrefixAffinityRouter

# Hop-by-hop and framing headers the ingress's own response sets.
_DROP = {"content-length", "transfer-encoding", "connection"}


def routing_key(path: str, body: bytes) -> str:
    """The text a request's prefix lives in: a completion's prompt, or a chat's message contents
    in order; "" for anything else (no affinity)."""
    if not path.startswith("/v1/") or not body:
        return ""
    try:
        req = json.loads(body)
    except ValueError:
        return ""
    if not isinstance(req, dict):
        return ""
    prompt = req.get("prompt")
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], str):
        return prompt[0]
    parts = []
    for m in req.get("messages") or []:
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(p.get("text", "") for p in content if isinstance(p, dict))
        parts.append("\n")
    return "".join(parts)


def _error(status: int, message: str) -> Response:
    body = {"error": {"message": message, "type": "unavailable", "param": None, "code": None}}
    return Response(json.dumps(body), status_code=status, media_type="application/json")


@serve.deployment
class EngineReplica:
    """One everett engine (`everett.LLM`) and the server's router over it."""

    def __init__(self, model: Optional[str], threads: int, llm_kwargs: Dict[str, Any],
                 http_kwargs: Dict[str, Any]):
        import everett

        self.llm = everett.LLM(model, threads=threads, **llm_kwargs)
        self.app = self.llm.http_app(**http_kwargs)
        # The native calls block with the GIL released; they wait on these threads.
        self.pool = ThreadPoolExecutor(max_workers=256, thread_name_prefix="everett-http")
        # The replica actor's name (namespace "serve").
        self.replica = serve.get_replica_context().replica_id.to_full_id_str()

    async def handle(self, key: str, method: str, path: str, headers, body: bytes):
        """The answer to one request: first (status, headers), then the body's chunks. Two
        headers say which replica answered and its engine's prefix-cache hits so far (tokens),
        for operators and for the tests of routing."""
        loop = asyncio.get_running_loop()
        status, out_headers, chunks = await loop.run_in_executor(
            self.pool, self.app.handle, method, path, headers, body)
        try:
            out_headers.append(("x-everett-replica", self.replica))
            out_headers.append(("x-everett-prefix-hit-tokens",
                                str(self.llm.stats()["prefix_hit_tokens"])))
            yield status, out_headers
            while True:
                chunk = await loop.run_in_executor(self.pool, chunks.next_chunk)
                if chunk is None:
                    return
                yield chunk
        finally:
            chunks.close()

    def stats(self) -> Dict[str, Any]:
        """The engine's counters (prefix-cache hits, steps, ...) and this replica's name."""
        return {"replica": self.replica, **self.llm.stats()}

    def record_routing_stats(self) -> Dict[str, Any]:
        return self.llm.stats()


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=4096)
class Ingress:
    """The HTTP entry: one request in, one replica's answer out."""

    def __init__(self, engine):
        self.engine = engine

    async def __call__(self, request: Request) -> Response:
        body = await request.body()
        path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in _DROP]
        key = routing_key(request.url.path, body)
        gen = self.engine.options(stream=True).handle.remote(key, request.method, path, headers,
                                                             body)
        try:
            status, out = await gen.__anext__()
        except Exception as e:  # the replica died or could not take the request
            return _error(503, f"the engine replica failed before answering ({type(e).__name__}: "
                               f"{e}); retry the request")
        out = {k: v for k, v in out if k.lower() not in _DROP}
        if out.get("content-type", "").startswith("text/event-stream"):
            return StreamingResponse(gen, status_code=status, headers=out)
        try:
            chunks = [c async for c in gen]
        except Exception as e:
            return _error(503, f"the engine replica failed while answering ({type(e).__name__}: "
                               f"{e}); retry the request")
        return Response(b"".join(chunks), status_code=status, headers=out)


@dataclass
class AppConfig:
    """What `build_app` needs: the engine's and the server's settings and Ray Serve's."""

    model: Optional[str] = None
    replicas: int = 1
    threads_per_replica: int = 1
    llm: Dict[str, Any] = field(default_factory=dict)
    http: Dict[str, Any] = field(default_factory=dict)
    routing: str = "affinity"  # or "pow2": Ray's default router
    router_kwargs: Dict[str, Any] = field(default_factory=dict)
    autoscaling: Optional[Dict[str, Any]] = None
    max_ongoing_requests: int = 64


def build_app(cfg: AppConfig):
    """The Ray Serve application (pass it to `serve.run`)."""
    options: Dict[str, Any] = {
        "ray_actor_options": {"num_cpus": cfg.threads_per_replica},
        "max_ongoing_requests": cfg.max_ongoing_requests,
    }
    if cfg.autoscaling:
        options["autoscaling_config"] = cfg.autoscaling
    else:
        options["num_replicas"] = cfg.replicas
    if cfg.routing == "affinity":
        options["request_router_config"] = RequestRouterConfig(
            request_router_class=PrefixAffinityRouter,
            request_router_kwargs=cfg.router_kwargs,
        )
    elif cfg.routing != "pow2":
        raise ValueError(f"routing must be 'affinity' or 'pow2', got {cfg.routing!r}")
    engine = EngineReplica.options(**options).bind(
        cfg.model, cfg.threads_per_replica, cfg.llm, cfg.http)
    return Ingress.bind(engine)
