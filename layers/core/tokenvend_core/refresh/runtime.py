"""A provider function's wiring: its Refresher, built once per container from its settings.

Its imports (requests, the provider catalogue) are the provider function's own: the vend
function, wired by `tokenvend_core.vend.runtime`, never pays for them at cold start.
"""

from __future__ import annotations

import os

from tokenvend_core.audit import Trail
from tokenvend_core.aws.clients import client
from tokenvend_core.aws.link_key import KmsLinkKey
from tokenvend_core.aws.secrets import SecretStore
from tokenvend_core.aws.store import TokenStore
from tokenvend_core.catalogue.spec import spec_for
from tokenvend_core.observability import tracer
from tokenvend_core.refresh.endpoint import TokenEndpoint, pooled_session
from tokenvend_core.refresh.fanout import SqsFanout
from tokenvend_core.refresh.link import LinkKey
from tokenvend_core.refresh.refresher import Refresher
from tokenvend_core.settings import Settings


def build_refresher(settings: Settings) -> Refresher:
    if not settings.provider:
        raise ValueError("PROVIDER is not set")
    tracer.patch(["requests"])  # trace the token endpoints' HTTP as well
    fanout = None
    if settings.fanout_queue_url:
        fanout = SqsFanout(client("sqs"), settings.fanout_queue_url)
    return Refresher(
        spec_for(settings.provider),
        settings,
        SecretStore(client("secretsmanager"), settings.secrets_prefix),
        TokenStore(client("dynamodb"), settings.table_name),
        TokenEndpoint(pooled_session(settings.schedule_concurrency)),
        fanout=fanout,
        owner=os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME")
        or os.environ.get("AWS_LAMBDA_FUNCTION_NAME")
        or "local",
        audit=Trail.from_env(),
    )


_link_keys: dict[str, LinkKey] = {}


def link_key(settings: Settings) -> LinkKey | None:
    """The KMS key that signs this function's connect links (LINK_KEY_ID), built once per
    container; None in a stack without one, where `connect` and `callback` answer internal."""
    if not settings.link_key_id:
        return None
    key = _link_keys.get(settings.link_key_id)
    if key is None:
        key = _link_keys[settings.link_key_id] = KmsLinkKey(client("kms"), settings.link_key_id)
    return key
