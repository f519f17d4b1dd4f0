#!/usr/bin/env python3
"""Cross-checks kiln's DSSE envelopes with securesystemslib, an implementation kiln did not write.

    verify --pub kiln.pub --jsonl FILE --artifact-sha256 HEX
        Verifies every envelope in FILE under the SPKI PEM public key with
        securesystemslib.dsse.Envelope.verify, checks the in-toto statement inside, then
        tampers with the payload and the payload type and checks that verification then fails.

    sign --payload FILE --out-dir DIR
        Generates an ECDSA P-256 key with securesystemslib's CryptoSigner, signs FILE as an
        in-toto statement, writes DIR/python.pub and DIR/envelope.intoto.jsonl for kiln to verify.

Exit status: 0 all checks passed, 1 a check failed, 2 usage error, 3 securesystemslib missing.
"""

import argparse
import hashlib
import json
import sys

try:
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        PublicFormat,
        load_pem_public_key,
    )
    from securesystemslib.dsse import Envelope
    from securesystemslib.exceptions import VerificationError
    from securesystemslib.signer import CryptoSigner, SSlibKey
except ImportError as e:  # pragma: no cover - exercised when the module is absent
    print(
        f"securesystemslib is not installed ({e}): run the test command in attest/README.md "
        "(pip install -r attest/tests/interop/requirements.txt)",
        file=sys.stderr,
    )
    sys.exit(3)

PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://slsa.dev/provenance/v1"


class CheckFailed(Exception):
    pass


def keyid_of(public_key) -> str:
    """sha256 of the DER SubjectPublicKeyInfo, computed with pyca/cryptography."""
    der = public_key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def verifies(envelope: Envelope, key: SSlibKey) -> bool:
    try:
        envelope.verify([key], 1)
        return True
    except VerificationError:
        return False


def cmd_verify(args) -> None:
    with open(args.pub, "rb") as f:
        public_key = load_pem_public_key(f.read())
    keyid = keyid_of(public_key)
    key = SSlibKey.from_crypto(public_key, keyid=keyid, scheme="ecdsa-sha2-nistp256")

    lines = [l for l in open(args.jsonl, encoding="utf-8").read().splitlines() if l.strip()]
    if not lines:
        raise CheckFailed("no envelopes in the file")
    for n, line in enumerate(lines, 1):
        data = json.loads(line)
        for sig in data["signatures"]:
            if sig.get("keyid") != keyid:
                raise CheckFailed(
                    f"line {n}: envelope keyid {sig.get('keyid')!r} is not sha256(DER SPKI) {keyid}"
                )
        envelope = Envelope.from_dict(json.loads(line))
        if not verifies(envelope, key):
            raise CheckFailed(f"line {n}: securesystemslib rejects kiln's signature")
        if envelope.payload_type != PAYLOAD_TYPE:
            raise CheckFailed(f"line {n}: payloadType {envelope.payload_type!r}")
        statement = json.loads(envelope.payload)
        if statement.get("_type") != STATEMENT_TYPE:
            raise CheckFailed(f"line {n}: _type {statement.get('_type')!r}")
        if statement.get("predicateType") != PREDICATE_TYPE:
            raise CheckFailed(f"line {n}: predicateType {statement.get('predicateType')!r}")
        digests = [s.get("digest", {}).get("sha256") for s in statement.get("subject", [])]
        if args.artifact_sha256 not in digests:
            raise CheckFailed(f"line {n}: artifact {args.artifact_sha256} not among {digests}")
        print(f"line {n}: securesystemslib accepts kiln's envelope")

        # The same check must fail once the payload is changed: one byte, then an edit that
        # keeps the JSON valid, then the payload type.
        flipped = Envelope.from_dict(json.loads(line))
        flipped.payload = bytes([flipped.payload[0] ^ 1]) + flipped.payload[1:]
        edited = Envelope.from_dict(json.loads(line))
        statement["subject"][0]["name"] = statement["subject"][0].get("name", "") + "-evil"
        edited.payload = json.dumps(statement).encode()
        retyped = Envelope.from_dict(json.loads(line))
        retyped.payload_type = "application/json"
        for what, bad in [("flipped byte", flipped), ("edited payload", edited), ("payload type", retyped)]:
            if verifies(bad, key):
                raise CheckFailed(f"line {n}: securesystemslib accepts a tampered envelope ({what})")
            print(f"line {n}: securesystemslib rejects tampered envelope ({what})")


def cmd_sign(args) -> None:
    private_key = ec.generate_private_key(ec.SECP256R1())
    public_key = private_key.public_key()
    # kiln's keyid convention, so the hint matches; kiln does not rely on it for validity.
    signer = CryptoSigner(private_key, SSlibKey.from_crypto(public_key, keyid=keyid_of(public_key)))
    with open(args.payload, "rb") as f:
        payload = f.read()
    envelope = Envelope(payload, PAYLOAD_TYPE, {})
    envelope.sign(signer)
    with open(f"{args.out_dir}/python.pub", "wb") as f:
        f.write(public_key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    with open(f"{args.out_dir}/envelope.intoto.jsonl", "w", encoding="utf-8") as f:
        f.write(json.dumps(envelope.to_dict()) + "\n")
    print("securesystemslib signed the payload")


def main() -> int:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd", required=True)
    v = sub.add_parser("verify")
    v.add_argument("--pub", required=True)
    v.add_argument("--jsonl", required=True)
    v.add_argument("--artifact-sha256", required=True)
    s = sub.add_parser("sign")
    s.add_argument("--payload", required=True)
    s.add_argument("--out-dir", required=True)
    args = parser.parse_args()
    try:
        {"verify": cmd_verify, "sign": cmd_sign}[args.cmd](args)
    except CheckFailed as e:
        print(f"FAILED: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
