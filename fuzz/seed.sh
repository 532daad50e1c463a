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
# detect_classify: the first bytes clients send, HTTP and not, whole and cut short.
i=0
for preamble in 'GET / HTTP/1.1\r\nHost: web\r\n\r\n' 'POST /api/vote HTTP/1.0\r\n' \
  'PROPFIND /dav HTTP/1.1\r\n' 'M-SEARCH * HTTP/1.1\r\n' 'GET http://a.example/x?y=1 HTTP/1.1\r\n' \
  'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n' 'PRI * HTTP/2.0\r\n' '\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03' \
  '*1\r\n$4\r\nPING\r\n' 'SSH-2.0-OpenSSH_9.6\r\n' 'GET  / HTTP/1.1' 'GET / HTTP/2.0' 'G\x00' \
  '\x00\x00\x00\x08\x04\xd2\x16\x2f'; do
  i=$((i + 1))
  printf "$preamble" | seed detect_classify "preamble-$i"
done

# admission_review: the first byte is the injector's flags (bit 0 legacy sidecar, 1 CNI,
# 2 anchors inline, 3 inject by default), the rest a review of every pod and pod template in
# the fixtures, plus the odd shapes the tests send.
review_seeds() { # < yaml stream; writes one review per pod (template) found
  python3 -c '
import json, sys, yaml
def pods(doc):
    if not isinstance(doc, dict): return
    if doc.get("kind") == "Pod": yield doc
    for item in doc.get("items") or []: yield from pods(item)
    spec = doc.get("spec") if isinstance(doc.get("spec"), dict) else {}
    for t in (spec.get("template"), (spec.get("jobTemplate") or {}).get("spec", {}).get("template")):
        if isinstance(t, dict): yield t
try:
    docs = list(yaml.safe_load_all(sys.stdin))
except yaml.YAMLError:
    sys.exit(0)
for n, doc in enumerate(d for doc in docs for d in pods(doc)):
    review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
              "request": {"uid": "705ab4f5-%04d" % n, "operation": "CREATE", "namespace": "default",
                          "kind": {"group": "", "version": "v1", "kind": "Pod"}, "object": doc}}
    print(json.dumps(review))
' 2>/dev/null
}
if command -v python3 >/dev/null && [ -d "$fixtures" ]; then
  find "$fixtures" -name '*.y*ml' -print0 | while IFS= read -r -d '' f; do
    n=0
    review_seeds < "$f" | while IFS= read -r line; do
      n=$((n + 1))
      for flags in '\x00' '\x09'; do
        { printf "$flags"; printf '%s' "$line"; } |
          seed admission_review "$(basename "$f")-$n-$(printf "$flags" | od -An -tx1 | tr -d ' ')"
      done
    done
  done
fi
r='{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","kind":{"group":"","version":"v1","kind":"Pod"},"object":'
for obj in '{"metadata":{"name":"p","annotations":{"mesh.io/inject":"enabled"}},"spec":{"containers":[{"name":"app"}]}}' \
  '{"metadata":{"annotations":{"config.mesh.io/skip-inbound-ports":"25, 8000-8100","config.linkerd.io/proxy-cpu-limit":"1"}},"spec":{"containers":[{"name":"app"}],"initContainers":[{"name":"migrate"}]}}' \
  '{"metadata":{"annotations":{"mesh.io/injected":"true"}},"spec":{"containers":[{"name":"mesh-proxy"}]}}' \
  '{"metadata":{},"spec":{"containers":[{"name":"mesh-proxy"}]}}' \
  '{"metadata":{},"spec":{"containers":"nope"}}' '{"spec":{"containers":[{"name":"a"}]}}' \
  '{"metadata":null,"spec":{"hostNetwork":true,"containers":[]}}' '{"metadata":{}}'; do
  printf '\x08%s}}' "$r$obj" | seed admission_review "inline-$(printf '%s' "$obj" | md5sum | cut -c1-12)"
done
for t in policy_load identity_parse csr_parse detect_classify admission_review; do
  echo "$t: $(find "corpus/$t" -type f 2>/dev/null | wc -l) seeds"
done
