"""Turns scripts/bench's results (one JSON object per line) into
BENCHMARKS.md on stdout, and saves them as one JSON document."""

import datetime
import json
import os
import platform
import subprocess
import sys

results_path, out_path, mode = sys.argv[1], sys.argv[2], sys.argv[3]
results = [json.loads(line) for line in open(results_path) if line.strip()]


def machine():
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "unknown CPU")
    mem = next((int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemTotal")), 0)
    try:
        pg = subprocess.run(["pg_config", "--version"], capture_output=True, text=True).stdout.strip()
    except OSError:
        pg = "PostgreSQL"
    return f"{os.cpu_count()} cores ({cpu}), {mem / 1048576:.0f} GiB, Linux {platform.release()}, {pg} (fsync off)"


def find(scenario, target, **extra):
    for r in results:
        if r.get("scenario") == scenario and r.get("target") == target and all(r.get(k) == v for k, v in extra.items()):
            return r
    return None


def lost(r):
    return "—" if not r else f"{r['lost']} / {r['duplicates']}"


def num(value, digits=0):
    if value is None:
        return "—"
    return f"{value:,.{digits}f}"


def pct(r, key, q):
    try:
        return r[key][q]
    except (KeyError, TypeError):
        return None


def ratio(a, b):
    return a / b if a is not None and b else None


json.dump({"date": datetime.datetime.utcnow().isoformat() + "Z", "machine": machine(), "mode": mode, "results": results},
          open(out_path, "w"), indent=2)

S = {name: {t: find(name, t) for t in ("herald", "peer", "bare")}
     for name in ("UnicastLatency", "UnicastThroughput", "Broadcast", "Idle", "Storm")}
pg1 = find("pgbench", "postgres", script="rows1")
pg100 = find("pgbench", "postgres", script="rows100")

lines = []
w = lines.append
w("# herald benchmarks")
w("")
w(f"One run of `scripts/bench{' --quick' if mode == 'quick' else ''}` on {datetime.date.today().isoformat()}: "
  f"{machine()}. herald (release build), PostgreSQL, the baselines and the load generator share these cores, "
  "so absolute figures move from run to run; the ratios compare servers measured side by side in this one run. "
  "The peer is a Node.js reference server (socket.io 4 + pg) that `HERALD_PEER_DIR` points at; it is not part of "
  "this repository (see `scripts/bench`). "
  f"Raw results: `{out_path}`.")
w("")
w("| scenario | measure | herald | peer (Node.js) | floor | herald / peer | target | met |")
w("|---|---|---|---|---|---|---|---|")


def row(scn, measure, h, p, floor, r, target, met):
    w(f"| {scn} | {measure} | {h} | {p} | {floor} | {r} | {target} | {met} |")


def records(r):
    """SENT rows written of those expected, and when they were complete."""
    if not r or "sent_records" not in r:
        return "—"
    done = r.get("records_complete_after_last_push_seconds")
    after = f", complete {done:.1f} s after the last push" if done is not None else ", incomplete"
    return f"{num(r['sent_records'])} of {num(r['sent_records_expected'])}{after}"


def records_met(r):
    return None if not r or "sent_records" not in r else r["sent_records"] >= r["sent_records_expected"]


def yes(cond):
    return "—" if cond is None else ("yes" if cond else "**no**")


def met(herald_ok, peer_ok):
    """A target with a part of herald's own and a part relative to the peer.
    Without the peer, only herald's part can be judged, and the cell says so."""
    if herald_ok is None:
        return "—"
    if peer_ok is None:
        return yes(herald_ok) + " (peer part not judged)"
    return yes(herald_ok and peer_ok)


def times_peer(hv, pv, factor):
    """Whether herald's rate is at least `factor` times the peer's; None
    without both (a peer that delivered nothing is beaten by any rate)."""
    if hv is None or pv is None:
        return None
    return hv >= factor * pv


h, p = S["UnicastLatency"]["herald"], S["UnicastLatency"]["peer"]
for q, limit in (("p50_ms", 2), ("p99_ms", 10)):
    hv, pv = pct(h, "commit_to_receipt", q), pct(p, "commit_to_receipt", q)
    row("S1 unicast latency", f"COMMIT→receipt {q[:3]} (ms)", num(hv, 2), num(pv, 2), "", num(ratio(hv, pv), 2),
        f"≤ {limit} ms", yes(None if hv is None else hv <= limit))
hv, pv = pct(h, "schedule_to_receipt", "p99_ms"), pct(p, "schedule_to_receipt", "p99_ms")
row("S1", "schedule→receipt p99 (ms)", num(hv, 2), num(pv, 2), "", num(ratio(hv, pv), 2), "", "")
row("S1", "lost / duplicated", lost(h), lost(p),
    "", "", "0 lost", yes(None if not h else h["lost"] == 0))

h, p = S["UnicastThroughput"]["herald"], S["UnicastThroughput"]["peer"]
hv, pv = h and h["sustained_deliveries_per_second"], p and p["sustained_deliveries_per_second"]
row("S2 unicast throughput", "deliveries/s", num(hv), num(pv), f"pgbench {num(pg100 and pg100['rows_per_second'])} rows/s",
    num(ratio(hv, pv), 1) + "×" if ratio(hv, pv) else "—", "≥ 50,000/s; ≥ 5× peer",
    met(None if hv is None else hv >= 50000, times_peer(hv, pv, 5)))
hr, pr = h and h["rows_per_second"], p and p["rows_per_second"]
row("S2", "rows committed/s, as a fraction of pgbench", f"{num(hr)} ({num(ratio(hr, pg100 and pg100['rows_per_second']), 2)})",
    f"{num(pr)} ({num(ratio(pr, pg100 and pg100['rows_per_second']), 2)})", "1.00", "", "≥ 0.70",
    yes(None if hr is None or not pg100 else hr / pg100["rows_per_second"] >= 0.7))
row("S2", "COMMIT→receipt p50 / p99 (ms)", f"{num(pct(h, 'commit_to_receipt', 'p50_ms'), 1)} / {num(pct(h, 'commit_to_receipt', 'p99_ms'), 1)}",
    f"{num(pct(p, 'commit_to_receipt', 'p50_ms'), 1)} / {num(pct(p, 'commit_to_receipt', 'p99_ms'), 1)}", "", "", "", "")
row("S2", "lost / duplicated", lost(h), lost(p), "", "", "0", yes(None if not h else h["lost"] == 0))
row("S2", "SENT delivery records", records(h), records(p), "", "", "all written", yes(records_met(h)))

h, p, b = S["Broadcast"]["herald"], S["Broadcast"]["peer"], S["Broadcast"]["bare"]
hv, pv, bv = h and h.get("fanout_median_ms"), p and p.get("fanout_median_ms"), b and b.get("fanout_median_ms")
row("S3 broadcast fan-out", f"one broadcast to {h and h['connected']} sockets, median of 5 (ms)", num(hv, 1), num(pv, 1), num(bv, 1),
    num(ratio(hv, pv), 2), "≤ 1.5× floor", yes(None if hv is None or not bv else hv <= 1.5 * bv))
hv, pv, bv = (r and r["sustained_deliveries_per_second"] for r in (h, p, b))
row("S3", "sustained deliveries/s", num(hv), num(pv), num(bv), num(ratio(hv, pv), 1) + "×" if ratio(hv, pv) else "—",
    "≥ 150,000/s; ≥ 5× peer",
    met(None if hv is None else hv >= 150000, times_peer(hv, pv, 5)))
row("S3", "lost / duplicated", lost(h), lost(p),
    lost(b), "", "0", yes(None if not h else h["lost"] == 0))
row("S3", "SENT delivery records", records(h), records(p), "", "", "all written", yes(records_met(h)))

h, p, b = S["Idle"]["herald"], S["Idle"]["peer"], S["Idle"]["bare"]
hv, pv, bv = h and h.get("rss_per_socket_kib"), p and p.get("rss_per_socket_kib"), b and b.get("rss_per_socket_kib")
row("S4 idle memory", f"RSS growth per socket at {h and h['connected']} sockets (KiB)", num(hv, 1), num(pv, 1), num(bv, 1),
    num(ratio(hv, pv), 2), "≤ 16 KiB; ≤ 1/3 of peer",
    met(None if hv is None else hv <= 16, None if hv is None or not pv else hv / pv <= 1 / 3))

h, p = S["Storm"]["herald"], S["Storm"]["peer"]
row("S5 connect storm", f"{h and h['sockets']} clients at once: seconds until all connected", num(h and h["connect_seconds"], 2),
    num(p and p["connect_seconds"], 2), "", "", "≤ 10 s, none refused",
    yes(None if not h else h["connect_seconds"] <= 10 and h["refused"] == 0 and h["connected"] == h["sockets"]))
row("S5", "connected / refused", f"{num(h and h['connected'])} / {num(h and h['refused'])}",
    f"{num(p and p['connected'])} / {num(p and p['refused'])}", "", "", "", "")

skipped = [r for r in results if "skipped" in r]
for r in skipped:
    w("")
    w(f"The {r['target']} did not run: {r['skipped']}. Its columns are empty, "
      "and the parts of targets relative to it are not judged.")
failed = [r for r in results if "error" in r]
if failed:
    w("")
    w("Failed in this run: " + "; ".join(f"{r['target']} {r['scenario']} ({r['error']})" for r in failed) + ".")
w("")
w(f"pgbench (PostgreSQL alone, 4 clients): {num(pg1 and pg1['tps'])} single-row transactions/s; "
  f"{num(pg100 and pg100['tps'])} 100-row transactions/s = {num(pg100 and pg100['rows_per_second'])} rows/s.")
w("")
w("Scenarios: S1 1,000 users with one socket each, single-row transactions at 500/s for 30 s; "
  "S2 5,000 users, 100-row transactions from 4 connections as fast as they commit for 20 s; "
  "S3 10,000 sockets in one sector, five single broadcasts a second apart, then 15 broadcasts/s for 10 s; "
  "S4 idle authenticated sockets (19,000: this sandbox caps a process at 20,000 open files); "
  "S5 10,000 clients connecting at once. Latency runs from the moment the load generator sends COMMIT "
  "(schedule→receipt from the open-loop schedule). Deliveries/s count from the first send to the last arrival, "
  "so a server that falls behind is measured by when it caught up. Every notification id is counted per socket."
  + (" `--quick` uses smaller sizes and shorter runs." if mode == "quick" else ""))
w("")
w("What limits each scenario on this machine, and what was tuned because of it: [benches/README.md](benches/README.md).")
print("\n".join(lines))
