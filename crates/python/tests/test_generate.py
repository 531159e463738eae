"""LLM.generate, stream, tokenize and perplexity against the command line's --json output:
the same engine must give the same tokens and the same log-probabilities, bit for bit."""

import json
import time

from conftest import f32
from everett import RequestOutput, SamplingParams

PROMPTS = [
    "The meaning of life is",
    "def fibonacci(n):",
    "Paris is the capital of",
    "In 1492, Columbus",
]


def assert_same(out, ref):
    """A CompletionOutput equals one sample of `everett generate --json`."""
    assert out.text == ref["text"]
    assert out.token_ids == [t["id"] for t in ref["tokens"]]
    assert out.finish_reason == ref["finish_reason"]
    if out.logprobs is None:
        return
    assert len(out.logprobs) == len(ref["tokens"])
    for step, t in zip(out.logprobs, ref["tokens"]):
        chosen = next(iter(step))
        assert chosen == t["id"]
        assert f32(step[chosen].logprob) == f32(t["logprob"])
        ranked = sorted((lp for lp in step.items() if lp[1].rank), key=lambda kv: kv[1].rank)
        assert [(i, f32(lp.logprob)) for i, lp in ranked] == [
            (a["id"], f32(a["logprob"])) for a in t["top_logprobs"]
        ]
    assert [f32(h) for h in out.entropies] == [f32(t["entropy"]) for t in ref["tokens"]]


def test_greedy_equals_cli(llm, cli_generate):
    refs = cli_generate(PROMPTS, "--temperature", "0", "--max-tokens", "24", "--top-logprobs", "3")
    outs = llm.generate(PROMPTS, SamplingParams(temperature=0, max_tokens=24, logprobs=3))
    assert len(outs) == len(PROMPTS)
    for prompt, out, ref in zip(PROMPTS, outs, refs):
        assert isinstance(out, RequestOutput)
        assert out.prompt == prompt
        assert out.prompt_token_ids == ref["prompt_token_ids"]
        assert out.finished
        assert len(out.outputs) == 1
        assert_same(out.outputs[0], ref)
        total = sum(f32(t["logprob"]) for t in ref["tokens"])
        assert abs(out.outputs[0].cumulative_logprob - total) < 1e-3


def test_token_id_and_dict_prompts(llm):
    ids = llm.tokenize(PROMPTS[0])
    p = SamplingParams(temperature=0, max_tokens=8)
    by_text = llm.generate(PROMPTS[0], p)[0]
    by_ids = llm.generate([ids], p)[0]
    assert by_ids.prompt is None
    assert by_ids.prompt_token_ids == ids == by_text.prompt_token_ids
    assert by_ids.outputs[0].token_ids == by_text.outputs[0].token_ids
    # vLLM's prompt dicts and its keyword for the parameters.
    dicts = llm.generate([{"prompt": PROMPTS[0]}, {"prompt_token_ids": ids}], sampling_params=p)
    assert [d.outputs[0].token_ids for d in dicts] == [by_text.outputs[0].token_ids] * 2
    assert dicts[0].prompt == PROMPTS[0] and dicts[1].prompt is None


def test_samples_equal_cli(llm, cli_generate):
    refs = cli_generate(
        [PROMPTS[0]], "--temperature", "0.9", "--top-k", "40", "--seed", "7", "--n", "3",
        "--max-tokens", "16", "--top-logprobs", "1",
    )
    p = SamplingParams(n=3, temperature=0.9, top_k=40, seed=7, max_tokens=16, logprobs=1)
    out = llm.generate(PROMPTS[0], p)[0]
    assert [o.index for o in out.outputs] == [0, 1, 2]
    assert len({tuple(o.token_ids) for o in out.outputs}) > 1, "three samples all alike"
    for o, ref in zip(out.outputs, refs):
        assert_same(o, ref)


def test_stop_strings_equal_cli(llm, cli_generate):
    refs = cli_generate([PROMPTS[1]], "--temperature", "0", "--max-tokens", "64", "--stop", "return")
    out = llm.generate(PROMPTS[1], SamplingParams(temperature=0, max_tokens=64, stop="return"))[0]
    assert_same(out.outputs[0], refs[0])
    assert out.outputs[0].finish_reason == "stop"
    assert "return" not in out.outputs[0].text
    assert out.outputs[0].logprobs is None and out.outputs[0].cumulative_logprob is None


def test_stream_deltas_add_up(llm):
    p = SamplingParams(temperature=0, max_tokens=20, logprobs=0)
    whole = llm.generate(PROMPTS[2], p)[0].outputs[0]
    deltas = list(llm.stream(PROMPTS[2], p))
    assert "".join(d.outputs[0].text for d in deltas) == whole.text
    assert [i for d in deltas for i in d.outputs[0].token_ids] == whole.token_ids
    assert [d.finished for d in deltas] == [False] * (len(deltas) - 1) + [True]
    assert deltas[-1].outputs[0].finish_reason == whole.finish_reason


def test_stream_close_cancels(llm):
    s = llm.stream(PROMPTS[0], SamplingParams(temperature=0, max_tokens=2000, ignore_eos=True))
    first = [next(s) for _ in range(3)]
    assert all(len(d.outputs[0].token_ids) == 1 for d in first)
    s.close()
    assert list(s) == []
    # The engine drops the request at its next step.
    for _ in range(100):
        if llm.stats()["running"] == 0:
            break
        time.sleep(0.02)
    assert llm.stats()["running"] == 0


def test_tokenize_equals_cli(llm, cli):
    text = "Hello, world! ½ of 2024 — naïve café"
    ids = json.loads(cli("tokenize", text, "--ids"))
    assert llm.tokenize(text, add_special_tokens=False) == ids
    with_bos = llm.tokenize(text)
    assert with_bos[1:] == ids and with_bos[0] == 2
    assert llm.detokenize(ids) == text


def test_perplexity_equals_cli(llm, cli, tmp_path):
    text = " ".join(f"Line {i}: the quick brown fox jumps over the lazy dog." for i in range(60))
    path = tmp_path / "text.txt"
    path.write_text(text)
    ref = json.loads(cli("perplexity", "--file", str(path), "--ctx", "128", "--json"))
    got = llm.perplexity(text, ctx=128)
    assert got["tokens_scored"] == ref["tokens_scored"]
    assert abs(got["perplexity"] - ref["perplexity"]) <= 1e-9 * ref["perplexity"]


def test_quantized_kv_cache_equals_cli(llm, cli_generate):
    """kv_type="q8_0" is the CLI's --kv-type q8_0, token for token, and differs from f16's."""
    import everett

    refs = cli_generate(PROMPTS[:2], "--temperature", "0", "--max-tokens", "24", "--top-logprobs", "3",
                        "--kv-type", "q8_0")
    q8 = everett.LLM(model=str(llm.model_path), kv_tokens=1024, kv_type="q8_0")
    try:
        outs = q8.generate(PROMPTS[:2], SamplingParams(temperature=0, max_tokens=24, logprobs=3))
    finally:
        q8.close()
    for out, ref in zip(outs, refs):
        assert_same(out.outputs[0], ref)
    f16 = llm.generate(PROMPTS[:2], SamplingParams(temperature=0, max_tokens=24, logprobs=3))
    # Not vacuous: the 8-bit cache moves the log-probabilities.
    assert any(a.outputs[0].cumulative_logprob != b.outputs[0].cumulative_logprob
               for a, b in zip(outs, f16))
