"""everett on Ray Serve, on one machine: a Ray cluster of two nodes of one CPU each made with
Ray's own `ray.cluster_utils.Cluster` (usage stats off), two engine replicas of one thread each
behind the prefix-affinity router. Checked: the official `openai` client unchanged (completions,
chat, streaming); greedy output equal to `everett generate`; requests sharing a long prefix
staying on one replica (whose prefix-cache hits rise, the other's not) while unrelated requests
spread over both; a replica killed under load (its requests fail with a clear error, the rest
complete, a replacement comes up, nothing hangs)."""

import json
import os
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from urllib.parse import urlunsplit

os.environ["RAY_USAGE_STATS_ENABLED"] = "0"

import openai  # noqa: E402
import pytest  # noqa: E402
import ray  # noqa: E402
from ray import serve  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

from everett.ray import AppConfig, build_app  # noqa: E402


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def url():
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    cfg = AppConfig(replicas=2, threads_per_replica=1, llm={"kv_tokens": 8192},
                    http={"model_name": "everett"})
    serve.run(build_app(cfg), name="everett", route_prefix="/")
    yield urlunsplit(("http", f"127.0.0.1:{port}", "", "", ""))
    serve.shutdown()
    ray.shutdown()
    cluster.shutdown()


def post(url, path, body, timeout=120):
    """(status, headers, parsed body) of a JSON POST."""
    req = urllib.request.Request(url + path, json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), json.loads(e.read() or b"{}")


def test_openai_client_unchanged(url):
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused")
    assert [m.id for m in client.models.list()] == ["everett"]
    c = client.completions.create(model="everett", prompt="The capital of France is",
                                  max_tokens=8, temperature=0)
    assert c.choices[0].text and c.choices[0].finish_reason in ("stop", "length")
    chat = client.chat.completions.create(
        model="everett", messages=[{"role": "user", "content": "Say hello."}],
        max_tokens=8, temperature=0)
    assert chat.choices[0].message.content
    pieces = [ch.choices[0].delta.content or "" for ch in client.chat.completions.create(
        model="everett", messages=[{"role": "user", "content": "Say hello."}],
        max_tokens=8, temperature=0, stream=True) if ch.choices]
    assert "".join(pieces) == chat.choices[0].message.content
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        client.completions.create(model="everett", prompt="x", max_tokens=-1)


def test_greedy_equals_cli(url):
    prompts = ["The meaning of life is", "def fibonacci(n):", "Once upon a time"]
    out = subprocess.run(
        [os.environ["EVERETT_BIN"], "generate", "--json", "--temperature", "0",
         "--max-tokens", "24", "--prompts-file", "/dev/stdin"],
        input="".join(json.dumps({"prompt": p}) + "\n" for p in prompts),
        capture_output=True, text=True, check=True)
    refs = [json.loads(line)["text"] for line in out.stdout.splitlines()]
    for p, ref in zip(prompts, refs):
        status, _, body = post(url, "/v1/completions",
                               {"model": "everett", "prompt": p, "max_tokens": 24,
                                "temperature": 0})
        assert status == 200, body
        assert body["choices"][0]["text"] == ref


def test_prefix_affinity(url):
    system = " ".join(f"Rule {i}: answer politely, briefly and truthfully." for i in range(40))
    shared = []
    for i in range(6):
        status, h, body = post(url, "/v1/completions", {
            "model": "everett", "prompt": f"{system}\nQuestion {i}: what is {i} + {i}?",
            "max_tokens": 4, "temperature": 0})
        assert status == 200, body
        shared.append((h["x-everett-replica"], int(h["x-everett-prefix-hit-tokens"])))
    owner = shared[0][0]
    assert all(r == owner for r, _ in shared), shared
    hits = [n for _, n in shared]
    assert hits == sorted(hits) and hits[-1] - hits[0] >= 5 * 200, hits
    seen = {}
    for i in range(16):
        status, h, _ = post(url, "/v1/completions", {
            "model": "everett", "prompt": f"{i * 7919} unrelated words number {i}",
            "max_tokens": 2, "temperature": 0})
        assert status == 200
        seen.setdefault(h["x-everett-replica"], []).append(
            int(h["x-everett-prefix-hit-tokens"]))
    assert len(seen) == 2, seen
    other = next(r for r in seen if r != owner)
    # The other replica served no shared prefix: its hits did not rise.
    assert len(set(seen[other])) == 1, seen


def replica_names(url):
    """The two replica actors' names, from the responses' replica header (idle replicas share
    unrelated requests)."""
    names = set()
    for i in range(40):
        _, h, _ = post(url, "/v1/completions", {"model": "everett", "prompt": f"{i} name",
                                                 "max_tokens": 1})
        names.add(h["x-everett-replica"])
        if len(names) == 2:
            break
    assert len(names) == 2, names
    return names


def test_replica_killed_under_load(url):
    names = replica_names(url)
    results = []

    def work(i):
        status, h, body = post(url, "/v1/completions", {
            "model": "everett", "prompt": f"Story {i}: once upon a time",
            "max_tokens": 400, "temperature": 0, "ignore_eos": True}, timeout=300)
        results.append((status, h.get("x-everett-replica"), body))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    time.sleep(2)
    victim = sorted(names)[0]
    ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)
    for t in threads:
        t.join(timeout=300)
        assert not t.is_alive(), "a request hung"
    assert len(results) == 8
    ok = [r for s, r, _ in results if s == 200]
    failed = [(s, b) for s, _, b in results if s != 200]
    # The survivor's requests complete; the victim's, in flight when it died, get a 503 that
    # says what happened.
    assert any(r != victim for r in ok), results
    assert failed, "no request was in flight on the killed replica"
    for s, b in failed:
        assert s == 503 and "replica" in b["error"]["message"], (s, b)
    # Ray Serve replaces the replica; the application serves on.
    deadline = time.time() + 120
    while time.time() < deadline:
        dep = serve.status().applications["everett"].deployments["EngineReplica"]
        if dep.replica_states.get("RUNNING", 0) == 2:
            break
        time.sleep(1)
    assert dep.replica_states.get("RUNNING", 0) == 2, dep
    status, _, body = post(url, "/v1/completions", {"model": "everett", "prompt": "Hello",
                                                     "max_tokens": 4, "temperature": 0})
    assert status == 200, body


def test_cli_flags_reach_ray_serve():
    from everett.ray.__main__ import config, parse

    a = parse(["--replicas", "3", "--threads-per-replica", "2", "--min-replicas", "1",
               "--max-replicas", "4", "--target-ongoing-requests", "8", "--kv-tokens", "4096",
               "--served-model-name", "m", "--routing", "pow2"])
    cfg = config(a)
    assert cfg.autoscaling == {"min_replicas": 1, "max_replicas": 4, "initial_replicas": 3,
                               "target_ongoing_requests": 8.0}
    assert cfg.llm["kv_tokens"] == 4096 and cfg.http["model_name"] == "m"
    assert cfg.threads_per_replica == 2 and cfg.routing == "pow2"
    build_app(cfg)  # Ray Serve accepts the options
    with pytest.raises(SystemExit):
        parse(["--min-replicas", "1"])
    with pytest.raises(ValueError, match="routing"):
        build_app(AppConfig(routing="random"))
