"""Charts for docs/BENCHMARKS.md from bench/results/results.jsonl (bench/run draws them).

    python3 bench/charts.py bench/results/results.jsonl docs/bench
"""

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

DAY = 86_400


def last(rows, label):
    found = [r for r in rows if r.get("label") == label]
    return found[-1] if found else None


def main(results, out):
    rows = [json.loads(line) for line in open(results) if line.strip()]

    # 1. Throughput against commit latency, 4 peers: closed loop and open loop; PostgreSQL.
    fig, ax = plt.subplots(figsize=(8, 5))
    for prefix, marker, name in (("closed-", "o", "closed loop (clients)"), ("open-", "s", "open loop (% of sustained)")):
        points = [r for r in rows if r.get("label", "").startswith(prefix)]
        points += [last(rows, "sustained")] if prefix == "closed-" and last(rows, "sustained") else []
        # Closed loop in order of clients, open loop in order of offered load.
        points = sorted({r["label"]: r for r in points}.values(),
                        key=lambda r: r.get("clients") or r.get("offered_rate") or 0)
        if not points:
            continue
        xs = [r["tx_per_s"] for r in points]
        ax.plot(xs, [r["p50_ms"] for r in points], marker=marker, label=f"medledger p50, {name}")
        ax.plot(xs, [r["p99_ms"] for r in points], marker=marker, linestyle="--", label=f"medledger p99, {name}")
        for r in points:
            tag = "64" if r["label"] == "sustained" else r["label"].split("-", 1)[-1]
            ax.annotate(tag + ("%" if prefix == "open-" else ""), (r["tx_per_s"], r["p99_ms"]), fontsize=7,
                        textcoords="offset points", xytext=(3, 3))
    pg = last(rows, "postgresql")
    if pg:
        ax.plot([pg["tx_per_s"]], [pg["p50_ms"]], "k^", label="PostgreSQL p50 (64 clients)")
        ax.plot([pg["tx_per_s"]], [pg["p99_ms"]], "kv", label="PostgreSQL p99 (64 clients)")
    ax.axhline(50, color="grey", linewidth=0.8, linestyle=":")
    ax.set_xlabel("committed transactions per second")
    ax.set_ylabel("commit latency (ms)")
    ax.set_yscale("log")
    ax.set_title("Throughput against commit latency, 4 peers, one 2-core machine")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(f"{out}/throughput-latency.png", dpi=110)

    # 2. The seed papers' comparison: capacity per day, and backlog after a day.
    sustained = last(rows, "sustained") or last(rows, "peers-4")
    systems = [("Bitcoin", 7), ("Ethereum", 25), ("IOTA", 50)]
    if sustained:
        systems.append(("medledger\n4 peers", sustained["tx_per_s"]))
    if pg:
        systems.append(("PostgreSQL\n1 server", pg["tx_per_s"]))
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.5))
    names = [s for s, _ in systems]
    per_day = [rate * DAY for _, rate in systems]
    a.bar(names, per_day, color="steelblue")
    for demand in (10e6, 30e6):
        a.axhline(demand, color="firebrick", linestyle="--", linewidth=1)
        a.annotate(f"{demand / 1e6:.0f}M/day", (0, demand), fontsize=8, color="firebrick",
                   textcoords="offset points", xytext=(0, 3))
    a.set_yscale("log")
    a.set_ylabel("transactions per day")
    a.set_title("Sustained capacity per day")
    a.tick_params(axis="x", labelsize=7)
    width = 0.4
    xs = range(len(systems))
    for k, demand in enumerate((10e6, 30e6)):
        backlog = [max(0.0, demand - rate * DAY) for _, rate in systems]
        b.bar([x + (k - 0.5) * width for x in xs], [max(v, 1) for v in backlog], width,
              label=f"{demand / 1e6:.0f}M transactions/day")
        for x, v in zip(xs, backlog):
            b.annotate(f"{v / 1e6:.1f}M" if v else "0", (x + (k - 0.5) * width, max(v, 1)),
                       fontsize=6, ha="center", textcoords="offset points", xytext=(0, 2))
    b.set_xticks(list(xs))
    b.set_xticklabels(names, fontsize=7)
    b.set_yscale("log")
    b.set_ylim(0.5, 1e8)
    b.set_ylabel("unsealed transactions after one day")
    b.set_title("Backlog after a day at the hospital system's load")
    b.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(f"{out}/backlog.png", dpi=110)

    # 3. Committed transactions per second across the primary's crash.
    vc = last(rows, "view-change")
    if vc:
        fig, ax = plt.subplots(figsize=(8, 3.5))
        ax.plot(range(len(vc["per_second"])), vc["per_second"], marker=".")
        # The primary is killed during setup + 10 s; mark the first second that fell below half
        # the median (setup time varies, so the second is read from the data).
        ps = vc["per_second"]
        median = sorted(ps)[len(ps) // 2]
        dip = next((i for i, v in enumerate(ps) if v < median / 2), None)
        if dip is not None:
            ax.axvline(dip, color="firebrick", linestyle="--", linewidth=1)
            ax.annotate("primary killed", (dip, max(ps) * 0.9), color="firebrick", fontsize=8,
                        textcoords="offset points", xytext=(4, 0))
        ax.set_xlabel("second of the measured window")
        ax.set_ylabel("committed tx in that second")
        ax.set_title("4 peers, 64 clients: a view change")
        fig.tight_layout()
        fig.savefig(f"{out}/view-change.png", dpi=110)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
