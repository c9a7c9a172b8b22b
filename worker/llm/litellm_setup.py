"""LiteLLM's process-wide settings; every module here that calls LiteLLM imports this."""

from __future__ import annotations

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
