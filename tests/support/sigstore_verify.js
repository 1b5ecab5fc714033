// Verify a Sigstore bundle offline with a public key, using @sigstore/verify
// (the verifier of sigstore-js, npm's own): the independent check of
// manifest.json.sigstore.json. Usage: node sigstore_verify.js BUNDLE ARTIFACT KEY.pub
// Exit 0 and "verified" when valid; exit 1 with the verifier's message otherwise.
'use strict';
const fs = require('fs');
const crypto = require('crypto');
const { bundleFromJSON } = require('@sigstore/bundle');
const { Verifier, toSignedEntity, toTrustMaterial } = require('@sigstore/verify');

const [bundlePath, artifactPath, keyPath] = process.argv.slice(2);
try {
  const bundle = bundleFromJSON(JSON.parse(fs.readFileSync(bundlePath, 'utf8')));
  const der = crypto.createPublicKey(fs.readFileSync(keyPath)).export({ type: 'spki', format: 'der' });
  const hint = bundle.verificationMaterial.content.publicKey.hint;
  // An empty trusted root: no CA, no transparency log, no timestamp authority.
  // The only trust is the key the caller brings, found by the bundle's hint.
  const root = { mediaType: 'application/vnd.dev.sigstore.trustedroot+json;version=0.1',
                 tlogs: [], certificateAuthorities: [], ctlogs: [], timestampAuthorities: [] };
  const keys = { [hint]: { rawBytes: der, keyDetails: 'PKIX_ECDSA_P256_SHA_256' } };
  const verifier = new Verifier(toTrustMaterial(root, keys),
                                { tlogThreshold: 0, ctlogThreshold: 0, timestampThreshold: 0 });
  verifier.verify(toSignedEntity(bundle, fs.readFileSync(artifactPath)));
  console.log('verified');
} catch (err) {
  console.error(`${err.name}: ${err.code || ''} ${err.message}`);
  process.exit(1);
}
