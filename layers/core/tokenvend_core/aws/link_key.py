"""The link key in KMS: an HMAC key (`HMAC_256`, `GENERATE_VERIFY_MAC`) that signs connect
links and derives their PKCE verifiers. Its material never leaves KMS; only the provider
functions of authorization-code providers may use it (template resource `LinkKey`)."""

from __future__ import annotations

from typing import Any

from tokenvend_core.aws.clients import aws_call, error_code

ALGORITHM = "HMAC_SHA_256"


class KmsLinkKey:
    """`refresh.link.LinkKey` through `kms:GenerateMac` and `kms:VerifyMac`."""

    def __init__(self, client: Any, key_id: str) -> None:
        self._client = client
        self.key_id = key_id

    def mac(self, message: bytes) -> bytes:
        with aws_call("KMS"):
            answer = self._client.generate_mac(
                KeyId=self.key_id, MacAlgorithm=ALGORITHM, Message=message
            )
        return bytes(answer["Mac"])

    def verify(self, message: bytes, mac: bytes) -> bool:
        """True when `mac` is the key's MAC of `message`; False when KMS says it is not
        (KMSInvalidMacException). Any other failure is told as every AWS failure is."""
        from botocore.exceptions import ClientError

        with aws_call("KMS"):
            try:
                answer = self._client.verify_mac(
                    KeyId=self.key_id, MacAlgorithm=ALGORITHM, Message=message, Mac=mac
                )
            except ClientError as exc:
                if error_code(exc) == "KMSInvalidMacException":
                    return False
                raise
        return bool(answer.get("MacValid"))
