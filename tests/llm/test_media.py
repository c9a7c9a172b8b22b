"""The no-fetch policy for media URLs (contract 8): which URLs LiteLLM would download for a
provider, and that loopback, private and link-local hosts are never let through."""

from __future__ import annotations

import ipaddress

import pytest
from litellm.llms.vertex_ai import common_utils  # noqa: TID251 (the constant mirrored here)

from worker.errors import InvalidRequest
from worker.llm.catalog import ModelCatalog
from worker.llm.media import (
    GEMINI_FILES_API_URI_PREFIX,
    MediaPolicy,
    is_public,
    litellm_fetches,
    providers_for,
)
from worker.llm.target import Target
from worker.messages import MediaUrl

PUBLIC_IP = "93.184.215.14"


def _image(url: str) -> MediaUrl:
    return MediaUrl("messages.0.content.1", url, "image")


def _file(url: str) -> MediaUrl:
    return MediaUrl("messages.2.parts.0", url, "file")


@pytest.mark.parametrize(
    ("media", "provider", "fetches"),
    [
        (_image("https://cdn.example.com/a.png"), "openai", False),
        (_image("https://cdn.example.com/a.png"), "azure", False),
        (_image("https://cdn.example.com/a.png"), "gemini", True),
        (_image("https://cdn.example.com/a.png"), "vertex_ai", True),
        (_image("https://cdn.example.com/a.png"), "bedrock", True),
        (_image("https://cdn.example.com/a.pdf"), "anthropic", True),
        (_image("https://cdn.example.com/a.png"), None, True),
        (_file("https://cdn.example.com/a.pdf"), "openai", True),  # _handle_pdf_url
        (_file("https://cdn.example.com/a.pdf"), "azure", True),
        (_file(GEMINI_FILES_API_URI_PREFIX + "abc"), "gemini", False),
        (_file(GEMINI_FILES_API_URI_PREFIX + "abc"), "bedrock", True),
    ],
)
def test_which_urls_litellm_would_download(
    media: MediaUrl, provider: str | None, fetches: bool
) -> None:
    assert litellm_fetches(media, provider) is fetches


def test_the_gemini_files_prefix_is_litellms() -> None:
    assert GEMINI_FILES_API_URI_PREFIX == common_utils.GEMINI_FILES_API_URI_PREFIX


def test_an_unlisted_host_is_refused_naming_message_part_and_host() -> None:
    with pytest.raises(InvalidRequest) as caught:
        MediaPolicy([]).fetched([_image("https://cdn.example.com/a.png")], ["gemini"])
    assert caught.value.message == (
        "invalid request_data: messages.0.content.1: the worker does not fetch media URLs for"
        " this model (image on host cdn.example.com, not in WORKER_MEDIA_URL_HOSTS); send it"
        " as a data: URL"
    )


def test_urls_the_provider_fetches_itself_pass_as_given() -> None:
    media = [_image("https://cdn.example.com/a.png"), _image("http://10.0.0.1/a.png")]
    assert MediaPolicy([]).fetched(media, ["openai"]) == []


def test_one_fetching_provider_among_the_deployments_is_enough_to_refuse() -> None:
    with pytest.raises(InvalidRequest, match=r"cdn\.example\.com"):
        MediaPolicy([]).fetched([_image("https://cdn.example.com/a.png")], ["openai", "gemini"])


def test_a_listed_host_is_let_through_to_the_address_check() -> None:
    policy = MediaPolicy([" CDN.example.com. ", PUBLIC_IP])
    media = [_image("https://cdn.example.com/a.png"), _file(f"https://{PUBLIC_IP}/a.pdf")]
    assert policy.fetched(media, ["bedrock"]) == media


async def test_a_listed_public_address_passes() -> None:
    await MediaPolicy([PUBLIC_IP]).check_addresses([_image(f"https://{PUBLIC_IP}/a.png")])


@pytest.mark.parametrize(
    "host",
    [
        "localhost",  # resolves to loopback
        "localhost.",
        "127.0.0.1",
        "127.1",  # short forms resolve to loopback too
        "2130706433",
        "[::1]",
        "[::ffff:127.0.0.1]",
        "169.254.169.254",  # AWS, GCP and Azure metadata
        "[fd00:ec2::254]",  # AWS's IPv6 metadata
        "100.100.100.200",  # Alibaba's metadata (shared address space)
        "168.63.129.16",  # Azure's wire server
        "10.0.0.1",
        "172.16.5.4",
        "192.168.1.1",
        "0.0.0.0",  # noqa: S104 (a host a job names, not one bound)
        "[fe80::1]",
        "[2002:a00:1::]",  # 6to4 around 10.0.0.1
    ],
)
async def test_non_public_hosts_are_never_fetched_even_when_listed(host: str) -> None:
    policy = MediaPolicy([host])
    media = [_image(f"http://{host}:8080/a.png")]
    fetched = policy.fetched(media, ["gemini"])
    with pytest.raises(InvalidRequest, match=r"messages\.0\.content\.1: the host .* non-public"):
        await policy.check_addresses(fetched)


async def test_a_host_that_does_not_resolve_is_refused() -> None:
    policy = MediaPolicy(["no-such-host.invalid"])
    media = policy.fetched([_file("https://no-such-host.invalid/a.pdf")], ["bedrock"])
    with pytest.raises(
        InvalidRequest, match=r"no-such-host\.invalid of the file URL cannot be resolved"
    ):
        await policy.check_addresses(media)


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("8.8.8.8", True),
        ("2606:4700:4700::1111", True),
        ("224.0.0.1", False),
        ("192.0.0.8", False),
        ("::", False),
        ("2001:0:4136:e378:8000:63bf:f5ff:fffe", False),  # Teredo around 10.0.0.1
    ],
)
def test_public_addresses(address: str, public: bool) -> None:
    assert is_public(ipaddress.ip_address(address)) is public


def test_a_models_fallbacks_count_among_its_providers() -> None:
    catalog = ModelCatalog(
        model_list=[
            {"model_name": "fast", "litellm_params": {"model": "openai/gpt-4o-mini"}},
            {"model_name": "backup", "litellm_params": {"model": "gemini/gemini-2.0-flash"}},
            {"model_name": "last", "litellm_params": {"model": "bedrock/amazon.nova-lite-v1:0"}},
        ],
        router_settings={"fallbacks": [{"fast": ["backup"]}, {"backup": ["last"]}]},
        litellm_settings={},
    )
    assert providers_for(catalog, Target("fast", routed=True)) == ("bedrock", "gemini", "openai")
    assert providers_for(catalog, Target("last", routed=True)) == ("bedrock",)
    assert providers_for(catalog, Target("gemini/x", routed=False)) == ("gemini",)
