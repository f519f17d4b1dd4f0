#!/usr/bin/env python3
"""Checks a SLSA Verification Summary Attestation written by `kiln verify --policy --vsa-out`
with securesystemslib, a DSSE implementation kiln did not write.

    securesystemslib_vsa.py --pub KEY.pub --jsonl VSA.intoto.jsonl --artifact-sha256 HEX \
        --expect-result PASSED|FAILED

Verifies the envelope's signature under the SPKI PEM key with securesystemslib.dsse, checks the
payload type, the statement and predicate types, that the artifact is the subject and the
verificationResult; then checks that a tampered copy (one payload byte flipped) is refused.

Exit status: 0 all checks passed, 1 a check failed, 2 usage error, 3 securesystemslib missing.
"""

import argparse
import hashlib
import json
import sys

try:
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        PublicFormat,
        load_pem_public_key,
    )
    from securesystemslib.dsse import Envelope
    from securesystemslib.exceptions import VerificationError
    from securesystemslib.signer import SSlibKey
except ImportError as e:  # pragma: no cover - exercised when the module is absent
    print(
        f"securesystemslib is not installed ({e}): "
        "pip install -r attest/tests/interop/requirements.txt",
        file=sys.stderr,
    )
    sys.exit(3)

PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
VSA_TYPE = "https://slsa.dev/verification_summary/v1"


def fail(msg: str) -> None:
    print(f"FAILED: {msg}", file=sys.stderr)
    sys.exit(1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pub", required=True)
    parser.add_argument("--jsonl", required=True)
    parser.add_argument("--artifact-sha256", required=True)
    parser.add_argument("--expect-result", required=True, choices=["PASSED", "FAILED"])
    args = parser.parse_args()

    with open(args.pub, "rb") as f:
        public_key = load_pem_public_key(f.read())
    der = public_key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    keyid = hashlib.sha256(der).hexdigest()
    key = SSlibKey.from_crypto(public_key, keyid=keyid, scheme="ecdsa-sha2-nistp256")

    lines = [l for l in open(args.jsonl, encoding="utf-8").read().splitlines() if l.strip()]
    if len(lines) != 1:
        fail(f"expected one envelope, found {len(lines)}")
    envelope = Envelope.from_dict(json.loads(lines[0]))
    try:
        envelope.verify([key], 1)
    except VerificationError as e:
        fail(f"securesystemslib rejects the VSA's signature: {e}")
    if envelope.payload_type != PAYLOAD_TYPE:
        fail(f"payloadType {envelope.payload_type!r}")
    statement = json.loads(envelope.payload)
    if statement.get("_type") != STATEMENT_TYPE:
        fail(f"_type {statement.get('_type')!r}")
    if statement.get("predicateType") != VSA_TYPE:
        fail(f"predicateType {statement.get('predicateType')!r}")
    digests = [s.get("digest", {}).get("sha256") for s in statement.get("subject", [])]
    if args.artifact_sha256 not in digests:
        fail(f"artifact {args.artifact_sha256} is not among the subjects {digests}")
    predicate = statement["predicate"]
    for field in ("verifier", "timeVerified", "resourceUri", "policy", "verificationResult",
                  "verifiedLevels"):
        if field not in predicate:
            fail(f"predicate lacks required field {field}")
    if predicate["verificationResult"] != args.expect_result:
        fail(f"verificationResult {predicate['verificationResult']!r}, expected {args.expect_result}")
    print(f"securesystemslib accepts the VSA: {predicate['verificationResult']} "
          f"{predicate['verifiedLevels']}")

    tampered = Envelope.from_dict(json.loads(lines[0]))
    tampered.payload = bytes([tampered.payload[0] ^ 1]) + tampered.payload[1:]
    try:
        tampered.verify([key], 1)
        fail("securesystemslib accepts a tampered VSA")
    except VerificationError:
        print("securesystemslib rejects a tampered VSA")


if __name__ == "__main__":
    main()
