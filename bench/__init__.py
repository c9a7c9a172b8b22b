"""The benchmark (`make bench`, `python -m bench`): the real pipeline end to end on this
machine, and two baselines. Not part of the worker's package.

Starts a throwaway PostgreSQL database, moto's SQS server, the LLM simulator and the worker,
each in its own process pinned to a core, sends jobs as the app does, and measures CPU per
chunk, memory, pickup and visibility latency, statements and WAL. Then it runs LiteLLM alone
and a bare aiohttp client on the same streams. Prints one JSON document and writes it to
`bench-results/<timestamp>-<label>.json`; process logs stay in `bench-results/tmp/`.
"""
