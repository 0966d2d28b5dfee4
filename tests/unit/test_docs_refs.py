"""Every test the docs name as the proof of a claim exists: a renamed or removed test fails
here, not silently in a reader's trust."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted([*ROOT.glob("docs/*.md"), ROOT / "README.md"])
# `tests/x/test_y.py`, `tests/x/test_y.py::name`, and `::name` right after one of them
REFERENCE = re.compile(r"`(tests/[\w/]+\.py)(?:::(\w+))?`((?:,?\s*(?:and\s+)?`::\w+`)*)")


def references() -> list[tuple[str, str, str | None]]:
    found = []
    for doc in DOCS:
        for match in REFERENCE.finditer(doc.read_text("utf-8")):
            path, name, more = match.groups()
            found.append((doc.name, path, name))
            found += [(doc.name, path, extra) for extra in re.findall(r"`::(\w+)`", more)]
    return found


def test_the_docs_name_tests() -> None:
    assert len(references()) > 50


@pytest.mark.parametrize(("doc", "path", "name"), references())
def test_every_named_test_exists(doc: str, path: str, name: str | None) -> None:
    source = ROOT / path
    assert source.is_file(), f"{doc} names {path}, which does not exist"
    if name:
        text = source.read_text("utf-8")
        assert re.search(rf"^(?:async )?def {name}\b|^class {name}\b|^{name}\s*=", text, re.M), (
            f"{doc} names {path}::{name}, which does not exist"
        )
