"""allowed_principals: exact matches, wildcards, assumed roles, and near misses."""

from __future__ import annotations

import pytest

from tokenvend_core.principals import caller_identities, is_allowed

ROLE = "arn:aws:iam::111122223333:role/reporting"
ASSUMED = "arn:aws:sts::111122223333:assumed-role/reporting/i-0abc"


def test_no_list_allows_everyone_and_an_empty_list_no_one() -> None:
    assert is_allowed(ASSUMED, None)
    assert not is_allowed(ASSUMED, [])
    assert not is_allowed(None, [ROLE])


def test_assumed_role_matches_its_role_and_its_own_arn() -> None:
    assert caller_identities(ASSUMED) == [ASSUMED, ROLE]
    assert is_allowed(ASSUMED, [ROLE])
    assert is_allowed(ASSUMED, [ASSUMED])
    assert is_allowed(ASSUMED, ["arn:aws:sts::111122223333:assumed-role/reporting/*"])


@pytest.mark.parametrize(
    ("caller", "patterns"),
    [
        ("arn:aws:iam::111122223333:user/alice", ["arn:aws:iam::111122223333:user/alice"]),
        ("arn:aws:iam::111122223333:user/alice", ["arn:aws:iam::111122223333:user/*"]),
        ("arn:aws:iam::111122223333:user/team/alice", ["arn:aws:iam::111122223333:user/team/*"]),
        (ASSUMED, ["arn:aws:iam::111122223333:role/report*"]),
        (ASSUMED, ["arn:aws:iam::*:role/reporting"]),
        ("arn:aws-cn:sts::111122223333:assumed-role/r/s", ["arn:aws-cn:iam::111122223333:role/r"]),
    ],
)
def test_matches(caller: str, patterns: list[str]) -> None:
    assert is_allowed(caller, patterns)


@pytest.mark.parametrize(
    ("caller", "patterns"),
    [
        # another account
        ("arn:aws:iam::999999999999:user/alice", ["arn:aws:iam::111122223333:user/alice"]),
        ("arn:aws:sts::999999999999:assumed-role/reporting/s", [ROLE]),
        # a longer name sharing a prefix
        ("arn:aws:iam::111122223333:user/alice2", ["arn:aws:iam::111122223333:user/alice"]),
        ("arn:aws:sts::111122223333:assumed-role/reporting-admin/s", [ROLE]),
        # a user is not a role of the same name
        ("arn:aws:iam::111122223333:user/reporting", [ROLE]),
        # regex characters in a pattern are literal
        ("arn:aws:iam::111122223333:user/alicex", ["arn:aws:iam::111122223333:user/alic."]),
        ("arn:aws:iam::111122223333:user/a", ["arn:aws:iam::111122223333:user/[a-z]"]),
        # a pattern smuggling a second wildcard in another syntax gets none
        ("arn:aws:iam::111122223333:user/alice", ["arn:aws:iam::111122223333:user/al?ce"]),
        ("arn:aws:iam::111122223333:user/alice", ["arn:aws:iam::111122223333:user/.*"]),
        ("arn:aws:iam::111122223333:user/alice", ["arn:aws:iam::111122223333:user/%2A"]),
        ("arn:aws:iam::111122223333:user/alice", ["arn:aws:iam::111122223333:user/\\w+"]),
        # a session name cannot smuggle a role match
        ("arn:aws:sts::111122223333:assumed-role/x/reporting", [ROLE]),
        # the role's path is not invented for an assumed role
        (ASSUMED, ["arn:aws:iam::111122223333:role/path/reporting"]),
    ],
)
def test_near_misses(caller: str, patterns: list[str]) -> None:
    assert not is_allowed(caller, patterns)


def test_the_wildcard_matches_only_what_it_stands_for() -> None:
    pattern = ["arn:aws:iam::111122223333:role/app-*-reader"]
    assert is_allowed("arn:aws:sts::111122223333:assumed-role/app-x-reader/s", pattern)
    assert not is_allowed("arn:aws:sts::111122223333:assumed-role/app-x-writer/s", pattern)
