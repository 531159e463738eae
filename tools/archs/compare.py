#!/usr/bin/env python3
"""Runs llama.cpp on the random-weight model of every architecture in
crates/engine/src/testutil/archs.rs and writes its greedy tokens and top-10 probabilities per
step to tools/archs/reference/<arch>.<f16|q8_0>.json, which crates/engine/tests/archs.rs compares
everett against (the test rebuilds the same model bytes from the same seed).

  compare.py              regenerate the reference files (needs tools/llamacpp/build.sh first,
                          and numpy for llama.cpp's gguf-py); for quantized files each step also
                          records llama.cpp's probabilities with the weights dequantized to F32
                          (its own activation-quantization noise, which the test allows for)
  compare.py --ablate     also show that each architecture's feature matters: llama.cpp's output
                          on the model with the feature switched off, against the real one

Environment: LLAMACPP_DIR (as build.sh). Not used by the tests or CI.
"""
import glob
import json
import os
import random
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LLAMA = os.environ.get("LLAMACPP_DIR", "/tmp/llamacpp")
SRC = glob.glob(os.path.join(LLAMA, "llama_cpp_python-*", "vendor", "llama.cpp"))
OUT = os.path.join(ROOT, "tools", "archs", "reference")
WORK = os.path.join(LLAMA, "archs")
SEED = 7
STEPS = 24
PROMPT_LEN = 40
CTX = 512
VOCAB = 384


def dequantized(path):
    """The same model with every tensor dequantized to F32 (gguf-py from llama.cpp's source)."""
    out = path.replace(".gguf", ".deq.gguf")
    run([sys.executable, os.path.join(ROOT, "tools/archs/dequantize.py"), path, out],
        env=dict(os.environ, PYTHONPATH=os.path.join(SRC[0], "gguf-py")))
    return out


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, check=True, **kw).stdout


def probe_binary():
    exe = os.path.join(LLAMA, "probe_greedy")
    if not os.path.exists(exe):
        if not SRC:
            sys.exit("llama.cpp is not built: run tools/llamacpp/build.sh")
        src = SRC[0]
        run(["g++", "-O2", "-std=c++17", os.path.join(ROOT, "tools/archs/probe_greedy.cpp"),
             f"-I{src}/include", f"-I{src}/ggml/include", f"-L{src}/build/bin", "-lllama",
             "-lggml", "-lggml-base", f"-Wl,-rpath,{src}/build/bin", "-o", exe])
    return exe


def generate(ablate):
    args = ["cargo", "run", "-q", "--release", "-p", "everett-engine", "--example", "archgen",
            "--", WORK, str(SEED)] + (["--ablate"] if ablate else [])
    return run(args, cwd=ROOT).split()


def prompt(name):
    rng = random.Random(f"{name}-{SEED}")
    return [rng.randrange(4, VOCAB) for _ in range(PROMPT_LEN)]


def llama_steps(exe, path, ids, forced=None, top_ids=None):
    cmd = [exe, path, str(CTX), "2", str(STEPS), ",".join(map(str, ids))]
    env = dict(os.environ)
    if forced:
        cmd.append(",".join(map(str, forced)))
        env["TOP_IDS"] = ";".join(",".join(str(i) for i, _ in t) for t in top_ids)
    out = run(cmd, env=env)
    steps = []
    for line in out.splitlines():
        tok, *pairs = line.split()
        top = [[int(a), float(b)] for a, b in (p.split(":") for p in pairs)]
        steps.append({"token": int(tok), "top": top})
    return steps


def main():
    exe = probe_binary()
    os.makedirs(OUT, exist_ok=True)
    for path in generate(False):
        name, storage = os.path.basename(path).split(".")[:2]
        ids = prompt(name)
        steps = llama_steps(exe, path, ids)
        if storage != "f16":
            # llama.cpp's own noise from quantizing activations: the same ids' probabilities
            # with the weights dequantized (no activation quantization), along the same path.
            tops = [s["top"] for s in steps]
            flt = llama_steps(exe, dequantized(path), ids, [s["token"] for s in steps], tops)
            for s, f in zip(steps, flt):
                s["float"] = f["top"]
        ref = {"arch": name, "storage": storage, "seed": SEED, "prompt": ids, "steps": steps}
        with open(os.path.join(OUT, f"{name}.{storage}.json"), "w") as f:
            json.dump(ref, f, separators=(",", ":"))
            f.write("\n")
        gaps = [s["top"][0][1] - s["top"][1][1] for s in steps]
        print(f"{name:9} {storage:5} tokens {[s['token'] for s in steps][:8]}... "
              f"min top-2 gap {min(gaps):.3f}")
    if "--ablate" in sys.argv:
        for path in generate(True):
            name, storage, kind = os.path.basename(path).split(".")[:3]
            if kind != "off":
                continue
            real = llama_steps(exe, path.replace(".off.gguf", ".gguf"), prompt(name))
            off = llama_steps(exe, path, prompt(name))
            diff = max(abs(dict(map(tuple, a["top"])).get(i, 0.0) - p)
                       for a, b in zip(real, off) for i, p in b["top"])
            same = sum(a["token"] == b["token"] for a, b in zip(real, off))
            print(f"{name:9} {storage:5} feature off: max |dp| {diff:.3f}, "
                  f"{same}/{len(real)} greedy tokens unchanged")


if __name__ == "__main__":
    main()
