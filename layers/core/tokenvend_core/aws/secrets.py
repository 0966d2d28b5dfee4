"""Connection secrets in Secrets Manager: `<prefix><provider>/<connection>`, a JSON object."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tokenvend_core.aws.clients import aws_call, error_code
from tokenvend_core.errors import Internal


@dataclass(frozen=True, slots=True)
class ConnectionSecret:
    value: dict[str, Any]
    version: str

    def __repr__(self) -> str:  # the value holds the client secret
        return f"ConnectionSecret(version={self.version!r})"


class SecretStore:
    def __init__(self, client: Any, prefix: str) -> None:
        self._client = client
        self.prefix = prefix

    def name(self, provider: str, connection: str) -> str:
        return f"{self.prefix}{provider}/{connection}"

    def get(self, provider: str, connection: str) -> ConnectionSecret | None:
        from botocore.exceptions import ClientError

        with aws_call("Secrets Manager"):
            try:
                answer = self._client.get_secret_value(SecretId=self.name(provider, connection))
            except ClientError as exc:
                if error_code(exc) == "ResourceNotFoundException":
                    return None
                if error_code(exc) == "InvalidRequestException" and "marked" in str(exc):
                    return None  # scheduled for deletion: as good as gone
                raise
        try:
            value = json.loads(answer.get("SecretString") or "")
        except ValueError:
            raise Internal(
                f"the secret of {provider}/{connection} is not a JSON object; "
                "put it again with `tokenvend connections put`"
            ) from None
        if not isinstance(value, dict):
            raise Internal(f"the secret of {provider}/{connection} is not a JSON object")
        return ConnectionSecret(value, str(answer.get("VersionId", "")))

    def put(self, provider: str, connection: str, value: dict[str, Any]) -> str:
        """A new version of an existing secret; returns its version id."""
        with aws_call("Secrets Manager"):
            answer = self._client.put_secret_value(
                SecretId=self.name(provider, connection),
                SecretString=json.dumps(value, separators=(",", ":")),
            )
        return str(answer.get("VersionId", ""))

    def awaiting_deletion(self, provider: str) -> set[str]:
        """Connections whose secret is scheduled for deletion: gone for callers, but an
        operator may still restore it."""
        prefix = f"{self.prefix}{provider}/"
        found: set[str] = set()
        with aws_call("Secrets Manager"):
            paginator = self._client.get_paginator("list_secrets")
            pages = paginator.paginate(
                Filters=[{"Key": "name", "Values": [prefix]}], IncludePlannedDeletion=True
            )
            for page in pages:
                for entry in page.get("SecretList", []):
                    name = entry.get("Name", "")
                    if name.startswith(prefix) and entry.get("DeletedDate"):
                        found.add(name[len(prefix) :])
        return found

    def list(self, provider: str) -> dict[str, str | None]:
        """Connection name -> current version id, for every secret under the provider's prefix."""
        prefix = f"{self.prefix}{provider}/"
        found: dict[str, str | None] = {}
        with aws_call("Secrets Manager"):
            paginator = self._client.get_paginator("list_secrets")
            for page in paginator.paginate(Filters=[{"Key": "name", "Values": [prefix]}]):
                for entry in page.get("SecretList", []):
                    name = entry.get("Name", "")
                    if not name.startswith(prefix) or entry.get("DeletedDate"):
                        continue
                    current = None
                    for version, stages in (entry.get("SecretVersionsToStages") or {}).items():
                        if "AWSCURRENT" in stages:
                            current = version
                    found[name[len(prefix) :]] = current
        return found
