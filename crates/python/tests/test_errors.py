"""Bad input gets a ValueError naming what is wrong (an EverettError for what is not the
caller's fault), and never costs the LLM its later requests."""

import pytest

import everett
from everett import EverettError, SamplingParams


@pytest.mark.parametrize(
    "params, field",
    [
        (dict(max_tokens=0), "max_tokens"),
        (dict(max_tokens=-5), "max_tokens"),
        (dict(temperature=-1.0), "temperature"),
        (dict(temperature=float("nan")), "temperature"),
        (dict(top_p=0.0), "top_p"),
        (dict(top_k=-2), "top_k"),
        (dict(min_p=1.5), "min_p"),
        (dict(repetition_penalty=0.0), "repetition_penalty"),
        (dict(presence_penalty=1e9), "presence_penalty"),
        (dict(n=0), "n"),
        (dict(n=100000), "n"),
        (dict(logprobs=-1), "logprobs"),
        (dict(logprobs=10**6), "logprobs"),
        (dict(seed=-1), "seed"),
        (dict(min_tokens=50, max_tokens=10), "min_tokens"),
        (dict(stop=[""]), "stop"),
        (dict(stop_token_ids=[-3]), "stop_token_ids"),
    ],
)
def test_bad_sampling_params(llm, params, field):
    with pytest.raises(ValueError, match=field):
        llm.generate("Hello", SamplingParams(**params))


def test_bad_prompts(llm):
    with pytest.raises(ValueError, match="prompt"):
        llm.generate([[2, 10**9]])
    with pytest.raises(ValueError, match="too large"):
        llm.generate("word " * 40000, SamplingParams(max_tokens=4))
    with pytest.raises(ValueError, match="params"):
        llm.generate(["a", "b"], [SamplingParams()])
    with pytest.raises(TypeError):
        llm.generate(42)
    with pytest.raises(ValueError, match="exactly one"):
        llm.generate({"prompt": "a", "prompt_token_ids": [2]})
    with pytest.raises(ValueError, match="not both"):
        llm.generate("a", SamplingParams(), sampling_params=SamplingParams())
    with pytest.raises(ValueError, match="ids"):
        llm.detokenize([-1])


def test_bad_mode_params(llm):
    with pytest.raises(ValueError, match="measure"):
        llm.explore("Hi", measure="best")
    with pytest.raises(ValueError, match="width"):
        llm.explore("Hi", width=0)
    with pytest.raises(ValueError, match="mode"):
        llm.collapse("Hi", mode="quantum")
    with pytest.raises(ValueError, match="ctx"):
        llm.perplexity("Hi there", ctx=10**7)
    with pytest.raises(ValueError, match="messages"):
        llm.chat("not a list of messages")


def test_bad_constructor_args():
    with pytest.raises(ValueError, match="kv_type"):
        everett.LLM(kv_type="f8")
    with pytest.raises(ValueError, match="threads"):
        everett.LLM(threads=0)
    with pytest.raises(ValueError, match="kv_tokens"):
        everett.LLM(kv_tokens=10**15)
    with pytest.raises(EverettError, match="does not exist"):
        everett.LLM("/nonexistent/model.gguf")


def test_llm_still_works_after_errors(llm):
    with pytest.raises(ValueError):
        llm.generate("Hello", SamplingParams(max_tokens=0))
    out = llm.generate("Hello", SamplingParams(temperature=0, max_tokens=4))[0]
    assert len(out.outputs[0].token_ids) == 4
