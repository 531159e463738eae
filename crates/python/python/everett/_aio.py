"""`AsyncLLM`: the engine for asyncio programs. Each call submits at once and waits on a pool
of Python threads (the native wait releases the GIL), so awaiting never blocks the event loop
and any number of requests are in flight from one loop. Cancelling the awaiting task (a
`cancel()`, a timeout) cancels the request in the engine. Only Python's own threads wait, so
the interpreter can always shut down cleanly (its thread pools are joined at exit)."""

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any, AsyncIterator, Optional

from ._everett import LLM, RequestOutput, SamplingParams


class AsyncLLM:
    """A model loaded in this process, for asyncio (the arguments are `LLM`'s). `max_waiters`
    bounds the requests awaited at once (each waits on a pool thread)."""

    def __init__(self, model=None, *, max_waiters: int = 256, **kwargs: Any) -> None:
        self.llm = LLM(model, **kwargs)
        self._pool = ThreadPoolExecutor(max_workers=max_waiters, thread_name_prefix="everett")

    async def _wait(self, job) -> RequestOutput:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, job.wait)
        except asyncio.CancelledError:
            job.cancel()
            raise

    async def generate(self, prompt, params: Optional[SamplingParams] = None) -> RequestOutput:
        """The completion of one prompt (a str, token ids or a prompt dict)."""
        return await self._wait(self.llm.submit(prompt, params))

    async def chat(self, messages, params: Optional[SamplingParams] = None, *,
                   tools=None) -> RequestOutput:
        """The answer to one conversation through the model's chat template."""
        return await self._wait(self.llm.submit_chat(messages, params, tools=tools))

    async def stream(self, prompt, params: Optional[SamplingParams] = None
                     ) -> AsyncIterator[RequestOutput]:
        """`RequestOutput` deltas as `LLM.stream` yields them."""
        s = self.llm.stream(prompt, params)
        loop = asyncio.get_running_loop()
        try:
            while True:
                delta = await loop.run_in_executor(self._pool, s.next_delta)
                if delta is None:
                    return
                yield delta
        finally:
            s.close()

    def tokenize(self, text: str, add_special_tokens: bool = True):
        return self.llm.tokenize(text, add_special_tokens)

    def stats(self):
        return self.llm.stats()

    def close(self) -> None:
        """Stops the engine and the waiting threads."""
        self.llm.close()
        self._pool.shutdown(wait=True)
