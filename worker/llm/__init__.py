"""The LLM edge: the only package that imports LiteLLM.

LiteLLM builds every request, names every error, reports usage and prices it; its Router
serves the models file. The worker owns only the bytes of the streams it reads itself.

- `catalog`: the models file, its validation, and resolving a job's model to a target;
- `events`: what a stream yields (text, who answered, how it ended);
- `errors`: LiteLLM's and the providers' errors as the contract's codes, secrets masked;
- `pricing`: token counts and cost;
- `limits`: per-model parallel-stream slots;
- `routed`: streaming through LiteLLM's Router and its stream wrapper;
- `openai_sse`: the lean reader of OpenAI's wire format;
- `completer`: the one object the job runner talks to.
"""

from __future__ import annotations

import os

# Before LiteLLM's import: it would otherwise fetch its price table over the network.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import logging
from importlib.metadata import version

import litellm

litellm.suppress_debug_info = True
# LiteLLM attaches a handler of its own (every record would print twice, unformatted) and
# warns at each start about pricing fields the worker does not use; its errors still show.
for _name in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy"):
    logging.getLogger(_name).handlers.clear()
    logging.getLogger(_name).setLevel(logging.ERROR)

LITELLM_VERSION = version("litellm")

from worker.llm.catalog import ModelCatalog, ModelsFileError, Target
from worker.llm.completer import Completer
from worker.llm.events import Answered, Routed, StreamEvent, TextDelta

__all__ = [
    "LITELLM_VERSION",
    "Answered",
    "Completer",
    "ModelCatalog",
    "ModelsFileError",
    "Routed",
    "StreamEvent",
    "Target",
    "TextDelta",
]
