"""Where the time goes: `perf report` of each process group folded into kinds of work.

    python3 bench/profile.py perf.data peers=PID,PID,... load=PID
"""

import re
import subprocess
import sys
from collections import defaultdict

KINDS = [
    ("Ed25519 (sign, verify)", r"curve25519|ed25519|sha512"),
    ("SHA-256", r"sha256"),
    ("RocksDB", r"rocksdb|crc32c|snappy|lz4"),
    ("allocation and copying", r"malloc|_int_free|_int_realloc|cfree|realloc|unlink_chunk|memmove|memcpy|memset|memcmp|__libc_calloc"),
    ("TLS (aws-lc, rustls)", r"aws_lc|rustls"),
    ("gRPC, HTTP/2, protobuf", r"h2::|tonic|hyper|prost|bytes::|tower|http::"),
    ("tokio runtime", r"tokio::|mio::|parking_lot"),
    ("medledger code", r"medledger"),
]


def kind(symbol, kernel):
    if kernel:
        return "kernel (network, fsync, scheduling)"
    for name, pattern in KINDS:
        if re.search(pattern, symbol):
            return name
    return "other"


def report(data, pids):
    """(symbol, kernel?, share of all samples) for the processes `pids`."""
    out = subprocess.run(
        ["perf", "report", "-i", data, "--no-children", "--percentage", "absolute",
         "--pid", pids, "--sort", "sym", "--stdio", "-g", "none"],
        capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        m = re.match(r"\s*([\d.]+)%\s+\[(.)\]\s+(.*)", line)
        if m:
            yield m[3], m[2] == "k", float(m[1])


def main():
    data = sys.argv[1]
    table = defaultdict(float)
    by_process = defaultdict(float)
    for group in sys.argv[2:]:
        process, pids = group.split("=", 1)
        for symbol, kernel, share in report(data, pids):
            by_process[process] += share
            table[(process, kind(symbol, kernel))] += share
    print("| process | share of all CPU samples |")
    print("|---|---:|")
    for process, share in sorted(by_process.items(), key=lambda x: -x[1]):
        print(f"| {process} | {share:.1f}% |")
    print()
    print("| process | kind of work | share of all CPU samples |")
    print("|---|---|---:|")
    for (process, k), share in sorted(table.items(), key=lambda x: -x[1]):
        if share >= 0.5:
            print(f"| {process} | {k} | {share:.1f}% |")


if __name__ == "__main__":
    main()
