"""The Python layer's overhead: 32 prompts generated through `everett.LLM.generate` against the
same 32 through the command line's engine (`everett generate --prompts-file --json`), in one
run, interleaved (the order flips every round), medians. Both sides must produce the same
tokens. Two comparisons:
  * whole: Python's generate against the CLI's wall time less a one-token run of one prompt
    (process start, model load, tokenizer);
  * decode: each side's 64-token run less its own 1-token run of the same 32 prompts, which
    cancels load and prefill alike and leaves the part where a per-token cost would show.

    python tools/python/bench_overhead.py --everett target/release/everett [--rounds 5]

Run it with an interpreter that has the everett wheel installed."""

import argparse
import json
import statistics
import subprocess
import tempfile
import time

import everett

SUBJECTS = ["The old lighthouse keeper", "A young engineer in Lisbon", "The committee",
            "My grandmother", "The first settlers", "A tired nurse", "The orchestra", "Our team"]
VERBS = ["decided to", "never wanted to", "finally learned how to", "was asked to"]


def prompts(n, r):
    """n prompts for round r: each round's differ from the first token on, so that the LLM's
    prefix cache (which a fresh CLI process does not have) saves it nothing across rounds."""
    return [f"Story {r}. {SUBJECTS[i % 8]} {VERBS[i // 8 % 4]} explain why the river changed "
            "its course, and" for i in range(n)]


def cli_run(binary, model, path, max_tokens):
    start = time.perf_counter()
    out = subprocess.run([binary, "generate", "--model", model, "--prompts-file", path, "--json",
                          "--temperature", "0", "--max-tokens", str(max_tokens)],
                         capture_output=True, text=True, check=True)
    return time.perf_counter() - start, [json.loads(l) for l in out.stdout.splitlines() if l.strip()]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--everett", required=True)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=64)
    a = ap.parse_args()
    llm = everett.LLM(max_running=max(64, a.prompts))
    model = str(llm.model_path)
    # logprobs=0: every token's logprob and entropy, as `generate --json` computes them (without
    # it the engine skips that pass over the vocabulary, and Python would do less work).
    params = everett.SamplingParams(temperature=0, max_tokens=a.max_tokens, logprobs=0)
    one_token = everett.SamplingParams(temperature=0, max_tokens=1, logprobs=0)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for r in range(a.rounds + 1):
            ps = prompts(a.prompts, r)
            first = prompts(a.prompts, 1000 + r)
            full, one = f"{d}/full{r}.jsonl", f"{d}/one{r}.jsonl"
            with open(full, "w") as f:
                f.writelines(json.dumps({"prompt": p}) + "\n" for p in ps)
            with open(one, "w") as f:
                f.writelines(json.dumps({"prompt": p}) + "\n" for p in first)

            def python_side():
                start = time.perf_counter()
                llm.generate(first, one_token)
                mid = time.perf_counter()
                outs = llm.generate(ps, params)
                return mid - start, time.perf_counter() - mid, outs

            def cli_side():
                return cli_run(a.everett, model, one, 1)[0], *cli_run(a.everett, model, full, a.max_tokens)

            if r % 2:
                cli1, cli64, refs = cli_side()
                py1, py64, outs = python_side()
            else:
                py1, py64, outs = python_side()
                cli1, cli64, refs = cli_side()
            assert [o.outputs[0].token_ids for o in outs] == [
                [t["id"] for t in ref["tokens"]] for ref in refs], "outputs differ"
            if r == 0:
                continue  # warm-up: page cache, thread pools
            rows.append((py1, py64, cli1, cli64))
            print(f"round {r}: python 1 tok {py1:.3f} s, 64 tok {py64:.3f} s; "
                  f"cli 1 tok {cli1:.3f} s, 64 tok {cli64:.3f} s", flush=True)
    med = [statistics.median(c) for c in zip(*rows)]
    py1, py64, cli1, cli64 = med
    # The CLI's one-token run of 32 prompts includes prefill; its load alone is about that
    # run less Python's one-token generate (same prefill, no load).
    whole = py64 / (cli64 - (cli1 - py1)) - 1
    decode = (py64 - py1) / (cli64 - cli1) - 1
    tokens = sum(len(o.outputs[0].token_ids) for o in outs)
    print(json.dumps({"prompts": a.prompts, "tokens": tokens, "median_s": {
        "python_1": py1, "python_64": py64, "cli_1": cli1, "cli_64": cli64},
        "overhead_whole": whole, "overhead_decode": decode}))

if __name__ == "__main__":
    main()
