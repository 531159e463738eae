#!/usr/bin/env python3
"""Prefix caching at the default model's whole window: one ~32k-token document (TEXT repeated to
118 000 characters) answered once, then for 8 clients at once with different questions; prints
the times and the prefix-cache hits from /metrics.
usage: tools/soak/prefix_long.py URL TEXT   (a running `everett serve --kv-tokens 40000`; the
session 12 run used README.md, DESIGN.md and the seeds concatenated, 49 kB)"""
import json, sys, time, threading
import serving
url = sys.argv[1]
text = open(sys.argv[2]).read()
doc = (text * (118000 // len(text) + 1))[:118000]
post = lambda path, body: serving.post(url, path, body)
metric = lambda name: serving.metric(url, name)
ntok = post("/tokenize", {"prompt": doc})["count"]
print("document tokens", ntok)
h0, q0 = metric("vllm:prefix_cache_hits_total"), metric("vllm:prefix_cache_queries_total")
t = time.time()
r = post("/v1/completions", {"prompt": doc + "\n\nQuestion 0: what is this about?", "max_tokens": 4, "temperature": 0})
print("first request %.1f s, prompt_tokens %d" % (time.time() - t, r["usage"]["prompt_tokens"]))
h1, q1 = metric("vllm:prefix_cache_hits_total"), metric("vllm:prefix_cache_queries_total")
times = [0.0] * 8
def one(i):
    t = time.time()
    post("/v1/completions", {"prompt": doc + f"\n\nQuestion {i+1}: what is this about?", "max_tokens": 4, "temperature": 0})
    times[i] = time.time() - t
t = time.time()
th = [threading.Thread(target=one, args=(i,)) for i in range(8)]
[x.start() for x in th]; [x.join() for x in th]
print("8 clients together: %.1f s wall, each %s" % (time.time() - t, ["%.1f" % x for x in times]))
h2, q2 = metric("vllm:prefix_cache_hits_total"), metric("vllm:prefix_cache_queries_total")
print("prefix cache: first request hits %d of %d queried tokens; the 8 clients hit %d of %d" % (h1 - h0, q1 - q0, h2 - h1, q2 - q1))
