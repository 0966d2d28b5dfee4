"""`allowed_principals`: which callers may get a connection's token.

A pattern is an IAM ARN in which `*` matches any run of characters (and nothing else is
special). An assumed-role caller `arn:aws:sts::ACCOUNT:assumed-role/ROLE/SESSION` is also
matched as `arn:aws:iam::ACCOUNT:role/ROLE`, exactly as the contract says; nothing else
widens a pattern (STS drops a role's path, so list such a role by its assumed-role ARN).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

_ASSUMED = re.compile(r"arn:(aws[a-z-]*):sts::(\d{12}):assumed-role/([^/]+)/[^/]+")


def caller_identities(arn: str) -> list[str]:
    """The ARNs a caller is known by: its own, and its role's for an assumed role."""
    found = [arn]
    match = _ASSUMED.fullmatch(arn)
    if match:
        partition, account, role = match.groups()
        found.append(f"arn:{partition}:iam::{account}:role/{role}")
    return found


@lru_cache(maxsize=1024)
def _compile(pattern: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")), re.DOTALL)


def is_allowed(caller_arn: str | None, patterns: Iterable[str] | None) -> bool:
    """True when the connection has no list, or the caller matches one of its patterns."""
    if patterns is None:
        return True
    patterns = list(patterns)
    if not caller_arn:
        return False
    identities = caller_identities(caller_arn)
    for pattern in patterns:
        if not isinstance(pattern, str) or not pattern:
            continue
        regex = _compile(pattern)
        if any(regex.fullmatch(identity) for identity in identities):
            return True
    return False
