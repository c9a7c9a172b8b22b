"""The worker fetches no URL a job names (contract 8): which media URLs LiteLLM would
download for a provider, and whether the operator lets it.

Where LiteLLM 1.110.2 downloads a URL to inline its bytes (read in its source):
- images (`image_url`) for every provider but OpenAI and Azure, which fetch them
  themselves: Gemini and Vertex (`vertex_ai/gemini/transformation.py`,
  `async_inline_remote_media`; only Gemini Files API URIs stay links), Bedrock
  (`BedrockImageProcessor` in `prompt_templates/factory.py`, Converse and Invoke),
  Anthropic (`http:` images inlined, `https:` links to a `.pdf` probed with a GET), and
  Ollama, Snowflake and others;
- files named by URL (`file.file_id` an http(s) URL) on every provider, OpenAI's
  included (`_handle_pdf_url` in `openai/chat/gpt_transformation.py`).

Rather than follow each provider's rules (they change between releases), every such URL
is refused unless its provider fetches it itself; a host in `WORKER_MEDIA_URL_HOSTS` is
let through when all its addresses are public. Residual risk: LiteLLM resolves the name
again when it fetches (DNS rebinding between the two lookups); its own `safe_get` then
checks the addresses it connects to and pins them (`litellm_core_utils/url_utils.py`),
so a rebinding answer still meets a block list, LiteLLM's rather than this one.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from urllib.parse import urlsplit

from worker.errors import InvalidRequest
from worker.llm.catalog import FALLBACK_KEYS, ModelCatalog, provider_of
from worker.llm.target import Target
from worker.messages import MediaUrl

# Providers that are sent image URLs as given and fetch them on their own side.
FETCH_IMAGES_THEMSELVES = frozenset({"openai", "azure"})
# Gemini's own file store: LiteLLM sends these as `file_uri`, never downloads them.
GEMINI_FILES_API_URI_PREFIX = "https://generativelanguage.googleapis.com/v1beta/files/"
_GEMINI_PROVIDERS = frozenset({"gemini", "vertex_ai", "vertex_ai_beta"})
# Addresses `is_global` calls public that are cloud-internal all the same.
_ALSO_BLOCKED = (
    ipaddress.ip_network("168.63.129.16/32"),  # Azure's wire server
    ipaddress.ip_network("192.0.0.0/24"),  # IETF protocol assignments
)
_RESOLVE_TIMEOUT_S = 5.0

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def litellm_fetches(media: MediaUrl, provider: str | None) -> bool:
    """Whether LiteLLM downloads this URL when it builds a request for the provider; an
    unknown provider is assumed to."""
    if provider in _GEMINI_PROVIDERS and media.url.startswith(GEMINI_FILES_API_URI_PREFIX):
        return False
    return not (media.kind == "image" and provider in FETCH_IMAGES_THEMSELVES)


def is_public(address: IPAddress) -> bool:
    """Not loopback, private, link-local (the metadata endpoints), reserved or multicast,
    nor such an address wrapped in IPv6 (mapped, 6to4, Teredo)."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is not None:
            return is_public(embedded)
        if address.teredo is not None:
            return all(is_public(inner) for inner in address.teredo)
    return (
        address.is_global
        and not address.is_multicast
        and not any(address in network for network in _ALSO_BLOCKED)
    )


def host_of(url: str) -> str | None:
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return None
    return host.rstrip(".").lower() if host else None


class MediaPolicy:
    """Refuses the media URLs a job may not have fetched, naming where the job put them."""

    def __init__(self, allowed_hosts: Iterable[str]) -> None:
        self._allowed = frozenset(
            host.strip().strip("[]").rstrip(".").lower() for host in allowed_hosts if host.strip()
        )

    def fetched(
        self, media_urls: Iterable[MediaUrl], providers: Iterable[str | None]
    ) -> list[MediaUrl]:
        """The URLs LiteLLM would fetch for any of the providers (a model's deployments and
        fallbacks); InvalidRequest for the first whose host is not listed."""
        providers = tuple(providers)
        fetched = []
        for media in media_urls:
            if not any(litellm_fetches(media, provider) for provider in providers):
                continue
            host = host_of(media.url)
            if host is None or host not in self._allowed:
                raise InvalidRequest(
                    f"invalid request_data: {media.where}: the worker does not fetch media URLs"
                    f" for this model ({media.kind} on host {host or '?'}, not in"
                    " WORKER_MEDIA_URL_HOSTS); send it as a data: URL"
                )
            fetched.append(media)
        return fetched

    async def check_addresses(self, media_urls: Iterable[MediaUrl]) -> None:
        """InvalidRequest unless every address of every URL's host is public."""
        for media in media_urls:
            host = host_of(media.url)
            assert host is not None  # fetched() let through listed hosts only
            for address in await _addresses(host, media):
                if not is_public(address):
                    raise InvalidRequest(
                        f"invalid request_data: {media.where}: the host {host} of the"
                        f" {media.kind} URL has a non-public address ({address}); it is"
                        " never fetched"
                    )


async def _addresses(host: str, media: MediaUrl) -> list[IPAddress]:
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        async with asyncio.timeout(_RESOLVE_TIMEOUT_S):
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, None, type=socket.SOCK_STREAM
            )
    except (OSError, TimeoutError):
        raise InvalidRequest(
            f"invalid request_data: {media.where}: the host {host} of the {media.kind} URL"
            " cannot be resolved"
        ) from None
    # The scope of a link-local IPv6 address (`fe80::1%eth0`) is not part of the address.
    return [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]


def providers_for(catalog: ModelCatalog, target: Target) -> tuple[str | None, ...]:
    """Every provider a target's request may reach: its deployments' and, through the
    Router's fallbacks, theirs (a fallback to Gemini inlines what OpenAI would not)."""
    names, pending = set(), [target.model]
    while pending:
        name = pending.pop()
        if name in names:
            continue
        names.add(name)
        for key in FALLBACK_KEYS:
            for rule in catalog.router_settings.get(key) or []:
                pending += list(rule.get(name) or [])
        pending += list(catalog.router_settings.get("default_fallbacks") or [])
    deployments = [
        str(entry["litellm_params"]["model"])
        for name in names
        for entry in catalog.deployments(name)
    ]
    if not target.routed or not deployments:
        deployments.append(target.model)
    return tuple(sorted({provider_of(deployment) for deployment in deployments}, key=str))
