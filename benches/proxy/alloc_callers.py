"""Who asks for a proxy's allocations, per request, from `perf script` of allocator uprobes
recorded with call graphs (benches/proxy/run.sh with PROFILE=DIR).

    perf script -i allocs.data | alloc_callers.py REQUESTS

Each allocation is put in one bucket by the first frame up its stack that belongs to a crate
other than the allocator, std/core/alloc and the containers they use (hashbrown, bytes,
smallvec): the crate that asked for the memory. Prints allocations per request by bucket and
the asking functions of each.
"""

import collections
import re
import sys

from shares import CRATE, print_buckets

# Frames that only pass an allocation on: the allocator and the containers everyone uses.
PASS_ON = re.compile(
    r"^(malloc|calloc|realloc|posix_memalign|aligned_alloc|__GI_\w+|__posix_memalign|__rust_\w+|"
    r"__rustc::\w+|__rdl_\w+|__libc_\w+|_int_\w+|"
    r"<?&?(?:mut )?(std|core|alloc|hashbrown|bytes|smallvec|slab|indexmap)::)"
)
BUCKETS = {
    "hyper (HTTP/1, client dispatch, bodies)": {"hyper", "hyper_util", "want"},
    "h2 (HTTP/2 streams and frames)": {"h2"},
    "http (header maps, extensions, URIs)": {"http", "httparse", "http_body", "http_body_util"},
    "tokio (tasks, channels, timers)": {"tokio", "mio"},
    "rustls": {"rustls", "ring", "tokio_rustls"},
    "tower": {"tower", "tower_layer", "tower_service"},
    "metrics": {"metrics"},
    "our layers": {"mesh", "mesh_tower", "mesh_core", "mesh_identity"},
}


def asker(frames):
    """The first frame (innermost first) that is not the allocator or a container."""
    for f in frames:
        if not PASS_ON.match(f):
            return f
    return frames[-1] if frames else "?"


def bucket(sym):
    m = CRATE.match(sym)
    if m:
        if m.group(1) == "mesh_tower" and "::metrics::" in sym:
            return "metrics"
        for b, crates in BUCKETS.items():
            if m.group(1) in crates:
                return b
    return "other"


def samples(lines):
    """Each sample's frames (function names, innermost first)."""
    frames = []
    for line in lines:
        if not line.strip():
            if frames:
                yield frames
            frames = []
            continue
        if line[0] in " \t":
            # "    55d0c0ffee hyper::proto::h1::role::parse+0x1c (/path/mesh)"
            parts = line.strip().split(" ", 1)
            if len(parts) == 2:
                frames.append(re.sub(r"\+0x[0-9a-f]+ \(.*$|\s\(.*$", "", parts[1]).strip())
    if frames:
        yield frames


def main():
    requests = max(int(sys.argv[1]), 1)
    by_bucket = collections.Counter()
    by_asker = collections.defaultdict(collections.Counter)
    total = 0
    for frames in samples(sys.stdin):
        total += 1
        who = asker(frames)
        b = bucket(who)
        by_bucket[b] += 1
        by_asker[b][who[:100]] += 1
    print(f"{total / requests:.1f} allocations per request ({total} over {requests} requests)")
    print_buckets(by_bucket, by_asker, lambda n: f"{n / requests:5.2f}", 4)


if __name__ == "__main__":
    main()
