"""Settings: environment variables parsed once, at start, into a typed object."""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass


class SettingsError(ValueError):
    """An environment variable is missing or malformed: the function cannot start."""


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name, "")
    if raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
    if not low <= value <= high:
        raise SettingsError(f"{name} must be between {low} and {high}, got {value}")
    return value


def _hosts(env: Mapping[str, str], name: str) -> frozenset[str]:
    """A comma-separated list of host names or IP addresses, each as `check_url` compares
    them (lower case; an IP address in its canonical form)."""
    hosts = set()
    for raw in env.get(name, "").split(","):
        host = raw.strip().lower()
        if not host:
            continue
        try:
            host = str(ipaddress.ip_address(host))
        except ValueError:
            if not re.fullmatch(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*", host):
                raise SettingsError(
                    f"{name} must list host names or IP addresses (no scheme, port or path), "
                    f"got {raw.strip()!r}"
                ) from None
        hosts.add(host)
    return frozenset(hosts)


def _key_id(env: Mapping[str, str], name: str) -> str:
    """A KMS key's id, ARN, alias name or alias ARN, or empty."""
    raw = env.get(name, "").strip()
    if raw and not re.fullmatch(r"[A-Za-z0-9:/_+=,.@-]{1,2048}", raw):
        raise SettingsError(f"{name} must be a KMS key id, key ARN or alias, got {raw!r}")
    return raw


@dataclass(frozen=True, slots=True)
class Settings:
    table_name: str
    secrets_prefix: str = "tokenvend/"
    provider: str = ""
    provider_function_prefix: str = "tokenvend-"
    refresh_lead: int = 900
    schedule_interval: int = 300
    cool_down: int = 30
    memory_cache: int = 30
    lease_seconds: int = 90
    default_lifetime: int = 3300
    attempt_deadline: int = 10
    lease_wait: int = 5
    schedule_concurrency: int = 64
    schedule_margin: int = 15
    backoff_cap: int = 3600
    # The largest difference between two containers' clocks (each within ±30 s of true
    # time). Tokens are treated as expiring this much early, and the cool-down is kept by
    # this much more; LEASE_SECONDS exceeds an attempt's deadline by more than this.
    clock_skew: int = 60
    fanout_queue_url: str = ""
    fanout_threshold: int = 2000
    fanout_batch: int = 100
    # Plain-HTTP token URLs on a loopback address: only the local stack and the tests set
    # ALLOW_HTTP_LOOPBACK; a deployed function never accepts them.
    allow_http_loopback: bool = False
    # Further hosts whose token URLs may be plain HTTP. Only the local stack sets
    # PLAIN_HTTP_HOSTS (the docker bridge address, which SAM CLI's containers and the host
    # both reach); empty when deployed, where no host is allowed plain HTTP.
    plain_http_hosts: frozenset[str] = frozenset()
    # The KMS HMAC key that signs and checks connect links (LINK_KEY_ID: a key id, key ARN
    # or alias); empty in a stack without authorization-code providers, where no link is made.
    link_key_id: str = ""
    # How long a connect link works (LINK_LIFETIME_SECONDS; the template's
    # LinkLifetimeSeconds): 10 minutes unless a stack says otherwise.
    link_lifetime: int = 600

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        table = env.get("TABLE_NAME", "")
        if not table:
            raise SettingsError("TABLE_NAME is not set")
        return cls(
            table_name=table,
            secrets_prefix=env.get("SECRETS_PREFIX", "tokenvend/"),
            provider=env.get("PROVIDER", ""),
            provider_function_prefix=env.get("PROVIDER_FUNCTION_PREFIX", "tokenvend-"),
            refresh_lead=_int(env, "REFRESH_LEAD_SECONDS", 900, 0, 86400),
            schedule_interval=60 * _int(env, "SCHEDULE_RATE_MINUTES", 5, 1, 1440),
            cool_down=_int(env, "COOL_DOWN_SECONDS", 30, 0, 3600),
            memory_cache=_int(env, "MEMORY_CACHE_SECONDS", 30, 0, 3600),
            lease_seconds=_int(env, "LEASE_SECONDS", 90, 1, 900),
            default_lifetime=_int(env, "DEFAULT_LIFETIME_SECONDS", 3300, 60, 86400 * 30),
            attempt_deadline=_int(env, "ATTEMPT_DEADLINE_SECONDS", 10, 1, 600),
            lease_wait=_int(env, "LEASE_WAIT_SECONDS", 5, 0, 600),
            schedule_concurrency=_int(env, "SCHEDULE_CONCURRENCY", 64, 1, 256),
            schedule_margin=_int(env, "SCHEDULE_MARGIN_SECONDS", 15, 1, 600),
            backoff_cap=_int(env, "BACKOFF_CAP_SECONDS", 3600, 60, 86400),
            clock_skew=_int(env, "CLOCK_SKEW_SECONDS", 60, 0, 300),
            fanout_queue_url=env.get("FANOUT_QUEUE_URL", ""),
            fanout_threshold=_int(env, "FANOUT_THRESHOLD", 2000, 1, 1_000_000),
            fanout_batch=_int(env, "FANOUT_BATCH", 100, 1, 1000),
            allow_http_loopback=env.get("ALLOW_HTTP_LOOPBACK", "").lower() in ("1", "true"),
            plain_http_hosts=_hosts(env, "PLAIN_HTTP_HOSTS"),
            link_key_id=_key_id(env, "LINK_KEY_ID"),
            link_lifetime=_int(env, "LINK_LIFETIME_SECONDS", 600, 1, 600),
        )
