"""Type stubs for everett's native module (re-exported by `everett`)."""

from collections.abc import Iterator, Mapping, Sequence
from os import PathLike
from typing import Any, Optional, Union

__version__: str

Prompt = Union[str, Sequence[int], Mapping[str, Any]]
"""Text (tokenized with the model's BOS), token ids, or vLLM's {"prompt": text} /
{"prompt_token_ids": ids}."""

Message = Mapping[str, Any]
"""A chat message as OpenAI and Hugging Face write it: {"role": ..., "content": ...}."""

class EverettError(Exception):
    """An error of the engine, the model file or the machine (not the caller's input).
    The caller's mistakes (bad parameters, a prompt too long) raise ValueError."""

class SamplingParams:
    """How to sample a completion, with vLLM's names, defaults and meanings."""

    n: int
    """Samples of the prompt (sharing its KV cache); sample i is seeded with seed + i."""
    max_tokens: int
    temperature: float
    """0 is greedy."""
    top_p: float
    top_k: int
    """0 or -1: all tokens."""
    min_p: float
    repetition_penalty: float
    """Multiplicative, over the last 64 tokens (prompt included), as llama.cpp's."""
    presence_penalty: float
    frequency_penalty: float
    seed: Optional[int]
    """None: a fresh random seed per request."""
    stop: list[str]
    """Stop strings; the text ends before the first one."""
    stop_token_ids: list[int]
    logprobs: Optional[int]
    """None: no log-probabilities; k: the chosen token's and the k most likely ones."""
    ignore_eos: bool
    min_tokens: int
    def __init__(
        self,
        *,
        n: int = 1,
        max_tokens: int = 16,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int = 0,
        min_p: float = 0.0,
        repetition_penalty: float = 1.0,
        presence_penalty: float = 0.0,
        frequency_penalty: float = 0.0,
        seed: Optional[int] = None,
        stop: Union[str, list[str], None] = None,
        stop_token_ids: Optional[list[int]] = None,
        logprobs: Optional[int] = None,
        ignore_eos: bool = False,
        min_tokens: int = 0,
    ) -> None: ...

class Logprob:
    """One token's log-probability under the model's raw distribution."""

    @property
    def logprob(self) -> float: ...
    @property
    def rank(self) -> Optional[int]:
        """1 = most likely; None when the token was not among the reported alternatives."""
    @property
    def decoded_token(self) -> str: ...

class CompletionOutput:
    """One sample's completion."""

    @property
    def index(self) -> int: ...
    @property
    def text(self) -> str: ...
    @property
    def token_ids(self) -> list[int]: ...
    @property
    def cumulative_logprob(self) -> Optional[float]:
        """None unless logprobs were asked for."""
    @property
    def logprobs(self) -> Optional[list[dict[int, Logprob]]]:
        """Per token: the chosen token first, then the alternatives by rank."""
    @property
    def entropies(self) -> Optional[list[float]]:
        """Per token: the entropy (nats) of the model's raw distribution."""
    @property
    def finish_reason(self) -> Optional[str]:
        """"stop" (end of generation, a stop string or id) or "length"; None while running."""
    def finished(self) -> bool: ...

class RequestOutput:
    """A request's result; a stream yields the same type holding only what is new."""

    @property
    def request_id(self) -> str: ...
    @property
    def prompt(self) -> Optional[str]:
        """The prompt's text (a chat's rendered template); None when given as token ids."""
    @property
    def prompt_token_ids(self) -> list[int]: ...
    @property
    def outputs(self) -> list[CompletionOutput]: ...
    @property
    def finished(self) -> bool: ...

class Stream(Iterator[RequestOutput]):
    """LLM.stream's deltas: one new token of one sample each (or its finish reason)."""

    def __next__(self) -> RequestOutput: ...
    def next_delta(self) -> Optional[RequestOutput]:
        """The next delta, None at the end."""
    def output(self) -> RequestOutput:
        """Everything produced so far, whole."""
    def close(self) -> None:
        """Cancels the request."""

class Job:
    """A request already in the engine (`LLM.submit`)."""

    def wait(self) -> RequestOutput:
        """The whole result (once); blocks this thread with the GIL released."""
    def cancel(self) -> None:
        """Cancels the request, from any thread; a wait in progress raises EverettError."""

class HttpBody:
    """A response body of `HttpApp.handle`, chunk by chunk."""

    def next_chunk(self) -> Optional[bytes]:
        """The next chunk (blocking, GIL released); None at the end."""
    def close(self) -> None:
        """Cancels the response and the engine request behind it."""

class HttpApp:
    """The OpenAI-compatible HTTP API of `everett serve`, answered in-process."""

    def handle(
        self, method: str, path: str, headers: list[tuple[str, str]], body: bytes
    ) -> tuple[int, list[tuple[str, str]], HttpBody]:
        """The router's status, headers and body for one request (blocking, GIL released)."""

class Record(Mapping[str, Any]):
    """An exploration or a collapse run: the command line's --json object, read like a dict."""

    def __getitem__(self, key: str) -> Any: ...
    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[str]: ...
    def to_dict(self) -> dict[str, Any]: ...
    def to_json(self) -> str: ...
    def to_html(self) -> str:
        """The self-contained page the command line's --html writes."""

class LLM:
    """A GGUF model in this process behind one engine thread (vLLM's offline API).

    model: a GGUF path; None pulls the default model (Gemma 3 270M) like `everett pull`.
    threads: compute threads (default: all cores). kv_tokens: KV cache capacity in tokens.
    max_running: sequences decoded side by side. kv_type: "f16", "f32", "q8_0" or "q4_0".
    """

    def __init__(
        self,
        model: Union[str, PathLike[str], None] = None,
        *,
        threads: Optional[int] = None,
        kv_tokens: int = 16384,
        max_running: int = 64,
        kv_type: str = "f16",
    ) -> None: ...
    def generate(
        self,
        prompts: Union[Prompt, Sequence[Prompt]],
        params: Union[SamplingParams, Sequence[SamplingParams], None] = None,
        *,
        sampling_params: Union[SamplingParams, Sequence[SamplingParams], None] = None,
    ) -> list[RequestOutput]:
        """Completions in input order; all prompts run as one continuous batch.
        `sampling_params` is vLLM's name for `params`."""
    def stream(self, prompt: Prompt, params: Optional[SamplingParams] = None) -> Stream: ...
    def submit(self, prompt: Prompt, params: Optional[SamplingParams] = None) -> Job:
        """Submits one prompt now; wait for its `Job` later, from any thread."""
    def submit_chat(
        self,
        messages: Sequence[Message],
        params: Optional[SamplingParams] = None,
        *,
        tools: Optional[Sequence[Mapping[str, Any]]] = None,
    ) -> Job: ...
    def http_app(
        self,
        *,
        model_name: Optional[str] = None,
        api_key: Optional[str] = None,
        max_seqs_per_request: int = 256,
        lenient_fields: bool = False,
    ) -> HttpApp:
        """The HTTP API of `everett serve` over this engine (model_name: the GGUF's stem)."""
    def chat(
        self,
        messages: Union[Sequence[Message], Sequence[Sequence[Message]]],
        params: Union[SamplingParams, Sequence[SamplingParams], None] = None,
        *,
        sampling_params: Union[SamplingParams, Sequence[SamplingParams], None] = None,
        tools: Optional[Sequence[Mapping[str, Any]]] = None,
    ) -> list[RequestOutput]:
        """Answers through the model's chat template (one per conversation)."""
    def explore(
        self,
        prompt: str,
        *,
        branches: int = 3,
        width: int = 10,
        steps: int = 6,
        temperature: float = 1.0,
        min_p: float = 0.0,
        measure: str = "max",
        seed: int = 0,
        stochastic: bool = False,
        alpha: float = 0.0,
        bifurcation_gap: float = 0.1,
        stop: Union[str, list[str], None] = None,
        no_share: bool = False,
    ) -> Record:
        """Many futures of one prompt as a tree (see `everett explore`)."""
    def collapse(
        self,
        prompt: str,
        *,
        max_tokens: int = 128,
        mode: str = "lookahead",
        window: int = 8,
        ngram: int = 4,
        candidates: int = 1,
        stop: Union[str, list[str], None] = None,
    ) -> Record:
        """Greedy decoding that commits several tokens per forward pass (see `everett collapse`)."""
    def perplexity(self, text: str, ctx: int = 512) -> dict[str, Any]:
        """llama.cpp's method: {"perplexity", "tokens_scored"}."""
    def tokenize(self, text: str, add_special_tokens: bool = True) -> list[int]: ...
    def detokenize(self, ids: Sequence[int]) -> str: ...
    def stats(self) -> dict[str, int]:
        """The engine's counters: steps, forward_tokens, running, waiting, cancelled, ..."""
    @property
    def context_length(self) -> int: ...
    @property
    def vocab_size(self) -> int: ...
    @property
    def model_path(self) -> str: ...
    @property
    def architecture(self) -> str: ...
    def close(self) -> None: ...
    def __enter__(self) -> "LLM": ...
    def __exit__(self, _t: object, _v: object, _tb: object) -> None: ...
