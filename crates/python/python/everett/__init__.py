"""everett: the engine in-process.

    from everett import LLM, SamplingParams
    llm = LLM()                      # the default model, pulled on first use
    outs = llm.generate(["The meaning of life is"], SamplingParams(temperature=0, max_tokens=32))
    print(outs[0].outputs[0].text)

`LLM` follows vLLM's offline API (generate, chat, SamplingParams, RequestOutput) and adds
everett's own: `stream`, `explore` (many futures of one prompt as a tree), `collapse` (greedy
decoding that commits several tokens per forward pass), `perplexity`. `AsyncLLM` serves asyncio
programs. The engine runs on its own thread with the GIL released, so requests from several
Python threads share forward passes.
"""

from collections.abc import Mapping

from ._aio import AsyncLLM
from ._everett import (
    LLM,
    CompletionOutput,
    EverettError,
    HttpApp,
    HttpBody,
    Job,
    Logprob,
    Record,
    RequestOutput,
    SamplingParams,
    Stream,
    __version__,
)

# An exploration or a collapse run reads like the dict of its JSON object.
Mapping.register(Record)

__all__ = [
    "LLM",
    "AsyncLLM",
    "CompletionOutput",
    "EverettError",
    "HttpApp",
    "HttpBody",
    "Job",
    "Logprob",
    "Record",
    "RequestOutput",
    "SamplingParams",
    "Stream",
    "__version__",
]
