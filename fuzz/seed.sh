#!/usr/bin/env bash
# Seeds each fuzz target's corpus (fuzz/corpus/<target>, ignored by git) from the shared
# fixtures and the shapes the tests use, so libFuzzer starts from real input, not from zero.
# Idempotent: files are named by content. Needs openssl for the CSR seeds.
set -euo pipefail
cd "$(dirname "$0")"
fixtures="${FIXTURES:-../../shared/fixtures}"

seed() { # target name < content
  mkdir -p "corpus/$1"
  cat > "corpus/$1/$2"
}

# policy_load: every fixture manifest, valid and invalid, as the loader reads them.
if [ -d "$fixtures" ]; then
  find "$fixtures" -name '*.yaml' -print0 | while IFS= read -r -d '' f; do
    seed policy_load "$(basename "$(dirname "$f")")-$(basename "$f")" < "$f"
  done
else
  echo "note: $fixtures is absent; policy_load starts from the inline seeds only" >&2
fi
seed policy_load alias.yaml <<'Y'
a: &a [x, x]
b: [*a, *a]
Y
seed policy_load deep.yaml <<< "data: [[[[[[[[[[]]]]]]]]]]"

# identity_parse: both forms, and near misses.
for id in spiffe://cluster.local/ns/emojivoto/sa/web \
  web.emojivoto.serviceaccount.identity.linkerd.cluster.local \
  spiffe://cluster.local/ns//sa/x spiffe://example.org/ns/a/sa/b/c; do
  printf '%s' "$id" | seed identity_parse "$(printf '%s' "$id" | md5sum | cut -c1-16)"
done

# csr_parse: real requests in PEM and DER, for the entitled identity and for others.
if command -v openssl >/dev/null; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  n=0
  for san in URI:spiffe://cluster.local/ns/emojivoto/sa/web \
    DNS:web.emojivoto.serviceaccount.identity.linkerd.cluster.local \
    URI:spiffe://cluster.local/ns/shop/sa/admin "DNS:a,DNS:b,IP:10.0.0.1"; do
    n=$((n + 1))
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$tmp/k" \
      -subj /CN=fuzz -addext "subjectAltName=$san" -out "$tmp/req.pem" 2>/dev/null
    seed csr_parse "pem-$n" < "$tmp/req.pem"
    openssl req -in "$tmp/req.pem" -outform DER -out "$tmp/req.der"
    seed csr_parse "der-$n" < "$tmp/req.der"
  done
else
  echo "note: no openssl; csr_parse starts from an empty corpus" >&2
fi
for t in policy_load identity_parse csr_parse; do
  echo "$t: $(find "corpus/$t" -type f 2>/dev/null | wc -l) seeds"
done
