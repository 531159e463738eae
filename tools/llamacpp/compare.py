#!/usr/bin/env python3
"""Compares everett with a local llama.cpp build (see build.sh) on this machine.

  compare.py step0            step-0 top-10 of ../shared/reference/greedy.jsonl: the largest
                              |p - p_ref| over the reference's ten tokens, for llama.cpp in
                              several legitimate configurations and for everett
  compare.py greedy           the issue's greedy check: the first step before the reference's
                              first near-tie (top-1 − top-2 < 0.02) whose greedy token differs
                              from the reference's (llama.cpp fed the reference's tokens)
  compare.py ppl FILE...      perplexity at ctx 512 and 1024, llama.cpp's tool and everett's

Environment: LLAMACPP_DIR (as build.sh), EVERETT (the binary, default target/release/everett),
MODEL (default: the cached default model), REFERENCE (default ../shared/reference/greedy.jsonl).
Not used by the tests or CI.
"""
import glob
import json
import math
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LLAMA = os.environ.get("LLAMACPP_DIR", "/tmp/llamacpp")
EVERETT = os.environ.get("EVERETT", os.path.join(ROOT, "target/release/everett"))
MODEL = os.environ.get(
    "MODEL", os.path.expanduser("~/.cache/everett/models/gemma-3-270m-q4_k_m.gguf"))
REFERENCE = os.environ.get(
    "REFERENCE", os.path.join(ROOT, "..", "shared", "reference", "greedy.jsonl"))
TOOLS = glob.glob(os.path.join(LLAMA, "llama_cpp_python-*", "vendor", "llama.cpp", "build", "bin"))

# (label, flash attention, threads, mode); mode "gen": the prompt as one batch, then one token
# at a time, as generation (and the reference) does.
LLAMA_CONFIGS = [
    ("llama.cpp default (FA auto), batch", -1, 2, "batch"),
    ("llama.cpp default, generation", -1, 2, "gen"),
    ("llama.cpp FA off, batch", 0, 2, "batch"),
    ("llama.cpp FA off, generation", 0, 2, "gen"),
    ("llama.cpp default, 1 thread", -1, 1, "batch"),
    ("llama.cpp default, token by token", -1, 2, "tokenwise"),
]


def run(cmd):
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout


def llama_probs(ids, fa, threads, mode, prompt_len=None):
    if mode == "gen":
        mode = str(prompt_len or len(ids))
    out = run([os.path.join(LLAMA, "probe"), MODEL, str(fa), str(threads), mode,
               ",".join(map(str, ids))])
    return {int(a): float(b) for a, b in (line.split() for line in out.splitlines())}


def everett_probs(prompt, kv):
    out = json.loads(run([EVERETT, "generate", "--model", MODEL, "--kv-type", kv, "--json",
                          "--max-tokens", "1", "--top-logprobs", "20", prompt]))
    return {t["id"]: math.exp(t["logprob"]) for t in out["tokens"][0]["top_logprobs"]}


def gap(probs, ref):
    """Largest |p - p_ref| over the reference's tokens; None if one is outside `probs`."""
    if any(t not in probs for t, _, _ in ref):
        return None
    return max(abs(probs[t] - p) for t, _, p in ref)


def cases():
    return [json.loads(line) for line in open(REFERENCE)]


def step0():
    engines = [(label, lambda d, c=(fa, threads, mode):
                llama_probs(d["prompt_token_ids_add_special_true"], *c))
               for label, fa, threads, mode in LLAMA_CONFIGS]
    engines += [(f"everett --kv-type {kv}", lambda d, kv=kv: everett_probs(d["prompt"], kv))
                for kv in ("f16", "f32")]
    for label, probs in engines:
        gaps = [gap(probs(d), d["top_probs_all_steps"][0]) for d in cases()]
        shown = " ".join("  n/a " if g is None else f"{g:.4f}" for g in gaps)
        print(f"{label:40} {shown}")


def first_tie(case):
    steps = case["top_probs_all_steps"]
    return next((i for i, s in enumerate(steps) if s[0][2] - s[1][2] < 0.02), len(steps))


def greedy_check(case, token_at):
    """"tie/step": the reference's first near-tie and the first step before it whose greedy
    token (`token_at(step)`) differs from the reference's ("-": none)."""
    ref, tie = case["completion_token_ids"], first_tie(case)
    differs = next((st for st in range(tie) if token_at(st) != ref[st]), None)
    return f"{tie}/{'-' if differs is None else differs}"


def greedy():
    print("per prompt: first near-tie step / first differing step before it (- if none)")
    for label, fa, threads, mode in LLAMA_CONFIGS:
        def token_at(st, d):
            # llama.cpp is fed the reference's own tokens up to the step.
            prompt = d["prompt_token_ids_add_special_true"]
            probs = llama_probs(prompt + d["completion_token_ids"][:st], fa, threads, mode,
                                len(prompt))
            return max(probs, key=probs.get)
        shown = [greedy_check(d, lambda st, d=d: token_at(st, d)) for d in cases()]
        print(f"{label:40} {'  '.join(shown)}")
    for kv in ("f16", "f32"):
        shown = []
        for d in cases():
            out = json.loads(run([EVERETT, "generate", "--model", MODEL, "--kv-type", kv,
                                  "--json", "--max-tokens", str(len(d["completion_token_ids"])),
                                  d["prompt"]]))
            ours = [t["id"] for t in out["tokens"]]
            shown.append(greedy_check(d, lambda st: ours[st] if st < len(ours) else None))
        print(f"{'everett --kv-type ' + kv:40} {'  '.join(shown)}")


def ppl(files):
    [tools] = TOOLS
    for f in files:
        for ctx in (512, 1024):
            out = subprocess.run([os.path.join(tools, "llama-perplexity"), "-m", MODEL, "-f", f,
                                  "-c", str(ctx), "-t", "2"], capture_output=True, text=True)
            found = re.search(r"Final estimate: PPL = ([0-9.]+)", out.stdout + out.stderr)
            if not found:
                # llama.cpp wants at least two chunks of text.
                print(f"{os.path.basename(f):20} ctx {ctx:4}  llama.cpp gave no estimate")
                continue
            ref = float(found[1])
            ours = json.loads(run([EVERETT, "perplexity", "--model", MODEL, "--file", f,
                                   "--ctx", str(ctx), "--json"]))["perplexity"]
            print(f"{os.path.basename(f):20} ctx {ctx:4}  llama.cpp {ref:8.4f}  everett "
                  f"{ours:8.4f}  {100 * (ours / ref - 1):+.2f} %")


if __name__ == "__main__":
    if sys.argv[1:2] == ["step0"]:
        step0()
    elif sys.argv[1:2] == ["greedy"]:
        greedy()
    elif sys.argv[1:2] == ["ppl"] and len(sys.argv) > 2:
        ppl(sys.argv[2:])
    else:
        sys.exit(__doc__)
