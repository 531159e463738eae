#!/usr/bin/env python3
"""Preemption at the default model's whole window: two requests of ~30k-token prompts (two
different stretches of TEXT) that each generate 2 500 greedy tokens, sent together to a server
whose KV cache cannot hold both to the end (`everett serve --kv-tokens 62000`): one of them is
preempted, gives up its blocks, waits and recomputes. Then each runs again alone; the answers
must be the same token for token. Prints the times, /metrics' preemption count and the verdict.
usage: tools/soak/preempt_long.py URL TEXT   (tools/long_context/make_text.sh makes TEXT)"""
import json, sys, time, threading
import serving
url, text = sys.argv[1], open(sys.argv[2]).read()
post = lambda path, body: serving.post(url, path, body)
metric = lambda name: serving.metric(url, name)
ids = post("/tokenize", {"prompt": text})["tokens"]
prompts = [ids[:30000], ids[40000:70000]]
body = lambda p: {"prompt": p, "max_tokens": 2500, "temperature": 0, "ignore_eos": True, "logprobs": 0}
together = [None, None]
def one(i):
    t = time.time()
    together[i] = post("/v1/completions", body(prompts[i]))
    print(f"request {i} together: {time.time() - t:.0f} s", flush=True)
p0 = metric("vllm:num_preemptions_total")
t = time.time()
th = [threading.Thread(target=one, args=(i,)) for i in range(2)]
[x.start() for x in th]; [x.join() for x in th]
p1 = metric("vllm:num_preemptions_total")
print(f"both: {time.time() - t:.0f} s wall, preemptions {p1 - p0:.0f}", flush=True)
same = True
for i in range(2):
    t = time.time()
    alone = post("/v1/completions", body(prompts[i]))
    a = [x for x in alone["choices"][0]["logprobs"]["tokens"]]
    b = [x for x in together[i]["choices"][0]["logprobs"]["tokens"]]
    print(f"request {i} alone: {time.time() - t:.0f} s; {len(a)} tokens, same as together: {a == b}", flush=True)
    same &= a == b
print("verdict:", "same answers" if same and p1 > p0 else "FAILED (no preemption or different answers)")
sys.exit(0 if same and p1 > p0 else 1)
