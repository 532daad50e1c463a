"""Where a proxy's CPU goes, as shares, from a perf profile (benches/proxy/run.sh, PROFILE=DIR).

    perf report -i perf.data --no-children --sort dso,sym --stdio -F overhead,dso,sym | shares.py

Each sample's own function (not its callers) is put in one bucket by its object and crate
(for `<T as Trait>::f`, the crate of T): the kernel, hyper (and h2, httparse, http), rustls
and ring, tokio, the allocator, metrics, our own crates, and the rest. Prints each bucket's share and its five largest functions.
"""

import collections
import re
import sys

ALLOCATOR = re.compile(r"^(malloc|free|realloc|calloc|cfree\S*|_int_malloc|_int_free|_int_realloc|"
                       r"malloc_consolidate|unlink_chunk\S*|tcache\S*|__rust_alloc|__rust_dealloc|"
                       r"__rust_realloc|alloc::alloc::\S+)$")
# A Rust symbol's crate: its first path segment, or for `<T as Trait>::f` the crate of T.
CRATE = re.compile(r"^<?&?(?:mut )?([A-Za-z_][A-Za-z0-9_]*)::")
CRATES = {
    "hyper, h2, http": {"hyper", "hyper_util", "h2", "http", "httparse", "http_body", "http_body_util", "want"},
    "tokio": {"tokio", "mio"},
    "rustls, ring": {"rustls", "ring", "webpki", "rustls_webpki"},
    "metrics": {"metrics"},
    "our layers": {"mesh", "mesh_tower", "mesh_core", "mesh_identity"},
}


def bucket(dso, sym):
    if "kernel" in dso or sym.startswith("[k]"):
        return "kernel"
    name = re.sub(r"^\[[.k]\]\s*", "", sym)
    if ALLOCATOR.match(name):
        return "allocator"
    if "ring_core" in name or re.match(r"^(aes|gcm|chacha|poly1305|sha\d+)", name):
        return "rustls, ring"
    m = CRATE.match(name)
    if m:
        if "::metrics::" in name and m.group(1) == "mesh_tower":
            return "metrics"
        for b, crates in CRATES.items():
            if m.group(1) in crates:
                return b
        return "other (std, core, tower, bytes, tracing …)"
    if "libc" in dso:
        return "libc (memcpy, syscall wrappers)"
    return "other (std, core, tower, bytes, tracing …)"


def main():
    shares = collections.Counter()
    top = collections.defaultdict(collections.Counter)
    for line in sys.stdin:
        m = re.match(r"\s*([\d.]+)%\s+(\S+)\s+(.*)$", line)
        if not m:
            continue
        pct, dso, sym = float(m.group(1)), m.group(2), m.group(3).strip()
        b = bucket(dso, sym)
        shares[b] += pct
        top[b][re.sub(r"^\[[.k]\]\s*", "", sym)[:90]] += pct
    total = sum(shares.values()) or 1.0
    print_buckets(shares, top, lambda v: f"{v / total * 100:5.1f} %", 5)


def print_buckets(totals, top, show, n):
    """Each bucket's value (`show` formats it), largest first, with its `n` largest items."""
    for name, v in totals.most_common():
        print(f" {show(v)}  {name}")
        for item, w in top[name].most_common(n):
            print(f"{'':12}{show(w)}  {item}")


if __name__ == "__main__":
    main()
