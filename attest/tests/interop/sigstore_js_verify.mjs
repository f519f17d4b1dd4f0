#!/usr/bin/env node
// Verifies a kiln Sigstore bundle with sigstore-js (@sigstore/bundle + @sigstore/verify), a
// Sigstore client kiln did not write. Offline: no TUF, no Rekor, no network.
//
//     node sigstore_js_verify.mjs BUNDLE ARTIFACT PUBKEY
//
// BUNDLE is ARTIFACT.sigstore.json, PUBKEY the signer's SPKI PEM public key (kiln.pub).
//
// 1. sigstore-js parses and validates the bundle (bundleFromJSON) and verifies it (Verifier):
//    the key is found by the bundle's `publicKey.hint` in a keyring holding only PUBKEY, keyed by
//    its key id (hex SHA-256 of the DER SubjectPublicKeyInfo, computed here with node:crypto);
//    the DSSE signature must verify under it. The trust material holds no transparency logs,
//    CT logs or timestamp authorities and the thresholds are 0, because kiln's bundles carry no
//    Rekor entries or RFC 3161 timestamps.
// 2. Then this script checks what sigstore-js leaves to the caller for a DSSE bundle (as
//    `cosign verify-blob-attestation` does): the media type is v0.3, the payload is an in-toto
//    Statement v1 with SLSA provenance v1, and ARTIFACT's SHA-256 is one of its subjects.
//
// Exit status: 0 verified, 1 verification failed, 2 usage error, 3 sigstore-js not installed.

import { createHash, createPublicKey } from 'node:crypto';
import { readFileSync } from 'node:fs';

const INSTALL = 'run `npm ci --prefix attest/tests/interop` (see attest/README.md)';
const MEDIA_TYPE = 'application/vnd.dev.sigstore.bundle.v0.3+json';
const PAYLOAD_TYPE = 'application/vnd.in-toto+json';
const STATEMENT_TYPE = 'https://in-toto.io/Statement/v1';
const PREDICATE_TYPE = 'https://slsa.dev/provenance/v1';

let sigstoreBundle, sigstoreVerify;
try {
  sigstoreBundle = await import('@sigstore/bundle');
  sigstoreVerify = await import('@sigstore/verify');
} catch (e) {
  console.error(`sigstore-js is not installed (${e.code ?? e.message}): ${INSTALL}`);
  process.exit(3);
}
const { bundleFromJSON } = sigstoreBundle;
const { Verifier, toSignedEntity, toTrustMaterial } = sigstoreVerify;

class CheckFailed extends Error {
  name = 'CheckFailed';
}

function main(argv) {
  if (argv.length !== 3) {
    console.error('usage: sigstore_js_verify.mjs BUNDLE ARTIFACT PUBKEY');
    process.exit(2);
  }
  const [bundlePath, artifactPath, pubkeyPath] = argv;

  const spki = createPublicKey(readFileSync(pubkeyPath)).export({ type: 'spki', format: 'der' });
  const keyid = createHash('sha256').update(spki).digest('hex');

  // Step 1: sigstore-js.
  const json = JSON.parse(readFileSync(bundlePath, 'utf8'));
  const bundle = bundleFromJSON(json);
  const keyring = { [keyid]: { rawBytes: spki } };
  const emptyRoot = { certificateAuthorities: [], timestampAuthorities: [], tlogs: [], ctlogs: [] };
  const verifier = new Verifier(toTrustMaterial(emptyRoot, keyring), {
    tlogThreshold: 0,
    ctlogThreshold: 0,
    timestampThreshold: 0,
  });
  verifier.verify(toSignedEntity(bundle));

  // Step 2: what the signed payload says.
  if (bundle.mediaType !== MEDIA_TYPE) {
    throw new CheckFailed(`mediaType is ${bundle.mediaType}, expected ${MEDIA_TYPE}`);
  }
  const envelope = bundle.content.dsseEnvelope;
  if (envelope.payloadType !== PAYLOAD_TYPE) {
    throw new CheckFailed(`payloadType is ${envelope.payloadType}, expected ${PAYLOAD_TYPE}`);
  }
  const statement = JSON.parse(envelope.payload.toString('utf8'));
  if (statement._type !== STATEMENT_TYPE) {
    throw new CheckFailed(`statement _type is ${statement._type}, expected ${STATEMENT_TYPE}`);
  }
  if (statement.predicateType !== PREDICATE_TYPE) {
    throw new CheckFailed(`predicateType is ${statement.predicateType}, expected ${PREDICATE_TYPE}`);
  }
  const digest = createHash('sha256').update(readFileSync(artifactPath)).digest('hex');
  if (!(statement.subject ?? []).some((s) => s?.digest?.sha256 === digest)) {
    throw new CheckFailed(`artifact sha256:${digest} is not a subject of the statement`);
  }
  console.log(
    `sigstore-js verified ${bundlePath}: key ${keyid}, subject sha256:${digest}, ` +
      `builder ${statement.predicate?.runDetails?.builder?.id}`,
  );
}

try {
  main(process.argv.slice(2));
} catch (e) {
  // VerificationError and ValidationError come from sigstore-js; their `code` / `fields` say
  // which check failed.
  const detail = e.code ? ` [${e.code}]` : e.fields ? ` [${e.fields.join(', ')}]` : '';
  console.error(`verification FAILED: ${e.name}${detail}: ${e.message}`);
  process.exit(1);
}
