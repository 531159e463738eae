#!/usr/bin/env python3
"""Needle in a haystack against llama.cpp: a sentence holding a number is placed at 10 depths
(0 %, 10 %, ... 90 %) of a ~30k-token haystack (TEXT's first 30 000 tokens), a question asks for
the number, and both engines answer by greedy generation (16 tokens) from the very same token
ids: llama-server's tokenization of each piece, BOS first. Prompts run deepest needle first, so
each shares the longest prefix with the one before (both engines cache prompt prefixes).
Writes OUT (llama.cpp's and everett's answers per depth) and prints them side by side; the
answer is what comes before the first line break, and the run fails unless it is the same at
every depth (the 16 tokens are compared too, and reported).

usage: tools/long_context/needle.py --everett BIN --llama-server BIN --model GGUF --text TEXT --out OUT
       tools/long_context/needle.py --summarize OUT
(session 13 ran it on Python 3.11's tutorial, HOWTOs and FAQ, the reST sources of Debian's
python3-doc package, concatenated: see tools/long_context/README.md)"""
import argparse, http.client, json, os, subprocess, sys, time

NEEDLE = "\nThe special magic number for the blue harbor is 48213. Remember it.\n"
QUESTION = ("\n\nQuestion: What is the special magic number for the blue harbor mentioned in "
            "the text above?\nAnswer: The special magic number for the blue harbor is")
HAY_TOKENS = 30000
DEPTHS = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0]
MAX_TOKENS = 16


def post(port, path, body, timeout=3600):
    """POSTs `body` as JSON to the local server on `port`; its JSON reply."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    c.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
    r = c.getresponse()
    data = r.read()
    if r.status != 200:
        sys.exit(f"POST {path} on port {port}: {r.status} {data[:300]!r}")
    return json.loads(data)


def wait(port, proc):
    """Waits until the local server on `port` answers /health with 200."""
    for _ in range(600):
        if proc.poll() is not None:
            sys.exit(f"the server exited ({proc.returncode}) before it was ready")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/health")
            if c.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(1)
    sys.exit(f"the server on port {port} never answered")


def prompts(llama, text):
    """Token ids per depth, made from llama-server's tokenization (`llama`: its port) of each piece."""
    tok = lambda s: post(llama, "/tokenize", {"content": s, "add_special": False})["tokens"]
    bos = post(llama, "/tokenize", {"content": "", "add_special": True})["tokens"]
    # Cut the haystack at line ends, so a needle never splits a word.
    lines = text.splitlines(keepends=True)
    hay, n = [], 0
    for line in lines:
        k = len(tok(line))
        if n + k > HAY_TOKENS:
            break
        hay.append(line)
        n += k
    cum = [0]
    for line in hay:
        cum.append(cum[-1] + len(line))
    joined = "".join(hay)
    needle, question = tok(NEEDLE), tok(QUESTION)
    out = {}
    for d in DEPTHS:
        i = min(range(len(cum)), key=lambda j: abs(cum[j] - d * len(joined)))
        before, after = joined[:cum[i]], joined[cum[i]:]
        out[d] = bos + (tok(before) if before else []) + needle + tok(after) + question
    return out


def main():
    ap = argparse.ArgumentParser()
    for a in ["--everett", "--llama-server", "--model", "--text", "--out"]:
        ap.add_argument(a, required=True)
    ap.add_argument("--port", type=int, default=8931)
    a = ap.parse_args()
    text = open(a.text).read()
    llama = a.port
    env = dict(os.environ, LD_LIBRARY_PATH=os.path.dirname(os.path.abspath(a.llama_server)))
    srv = subprocess.Popen([a.llama_server, "-m", a.model, "-c", "32768", "-t", "2", "-np", "1",
                            "--port", str(a.port)], env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    result = {"needle": NEEDLE, "question": QUESTION, "depths": {}}
    try:
        wait(llama, srv)
        ids = prompts(llama, text)
        for d in DEPTHS:
            t = time.time()
            r = post(llama, "/completion", {"prompt": ids[d], "n_predict": MAX_TOKENS,
                                             "temperature": 0, "top_k": 1, "repeat_penalty": 1.0,
                                             "cache_prompt": True, "seed": 0})
            result["depths"][str(d)] = {"prompt_tokens": len(ids[d]), "llama.cpp": r["content"],
                                        "llama.cpp_s": round(time.time() - t, 1)}
            print(f"llama.cpp depth {d:.1f}: {r['content']!r} ({time.time() - t:.0f} s)", flush=True)
    finally:
        srv.terminate()
        srv.wait()
    ev = a.port + 1
    srv = subprocess.Popen([a.everett, "serve", "--model", a.model, "--threads", "2", "--port",
                            str(a.port + 1), "--kv-tokens", "70000"], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    try:
        wait(ev, srv)
        for d in DEPTHS:
            t = time.time()
            r = post(ev, "/v1/completions", {"prompt": ids[d], "max_tokens": MAX_TOKENS,
                                              "temperature": 0})
            e = result["depths"][str(d)]
            e["everett"] = r["choices"][0]["text"]
            e["everett_s"] = round(time.time() - t, 1)
            same = "same" if e["everett"] == e["llama.cpp"] else (
                "same answer" if answer(e["everett"]) == answer(e["llama.cpp"]) else "DIFFERENT")
            print(f"everett   depth {d:.1f}: {e['everett']!r} ({time.time() - t:.0f} s) {same}",
                  flush=True)
    finally:
        srv.terminate()
        srv.wait()
    finish(result, a.out)


def answer(text):
    """The answer: what the model wrote before its first line break."""
    return text.strip().split("\n")[0]


def finish(result, out):
    """Adds the summary (answers the same, whole 16 tokens the same, needles found), writes OUT,
    exits 0 when every depth has the same answer."""
    ds = result["depths"].values()
    for e in ds:
        e["same"] = e["everett"] == e["llama.cpp"]
        e["same_answer"] = answer(e["everett"]) == answer(e["llama.cpp"])
    result["summary"] = {
        "depths": len(ds),
        "same_answers": sum(e["same_answer"] for e in ds),
        "same_16_tokens": sum(e["same"] for e in ds),
        "llama.cpp_found": sum("48213" in answer(e["llama.cpp"]) for e in ds),
        "everett_found": sum("48213" in answer(e["everett"]) for e in ds)}
    print(json.dumps(result["summary"]))
    with open(out, "w") as f:
        json.dump(result, f, indent=1)
    sys.exit(0 if result["summary"]["same_answers"] == len(ds) else 1)


if len(sys.argv) == 3 and sys.argv[1] == "--summarize":
    # Recomputes the summary of a finished run's OUT (after a change to `finish`).
    finish(json.load(open(sys.argv[2])), sys.argv[2])


else:
    main()
