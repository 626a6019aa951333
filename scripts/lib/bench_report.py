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
     for name in ("UnicastLatency", "UnicastThroughput", "UnicastCapacity", "Broadcast", "Fanout", "Idle", "Storm")}
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


# The bare server's single broadcast usually takes 15-25 µs per socket on
# this machine (170-190 ms to 10,000 sockets); a median outside that says
# the machine was busy with something else, and a ratio to it means little.
FLOOR_US_PER_SOCKET = (13.0, 25.0)
# Below this many sockets fixed costs dominate and the range does not apply.
FLOOR_RANGE_FROM_SOCKETS = 5000

# herald's figures before this round's changes (benches/results/20261127T161009Z-full.json),
# for the targets that ask for "no worse than before".
BEFORE = {"s1_p99_ms": 5.36, "s4_kib": 20.1, "s5_seconds": 6.42}

# Open-loop capacity: the highest rate whose COMMIT→receipt p99 stays within this.
CAPACITY_P99_MS = 250


def spread(samples):
    """Median, quartiles and extremes of a list of samples."""
    xs = sorted(x for x in samples if x is not None)
    if not xs:
        return None
    q = lambda f: xs[min(len(xs) - 1, int(round(f * (len(xs) - 1))))]
    return {"n": len(xs), "median": q(0.5), "p25": q(0.25), "p75": q(0.75), "min": xs[0], "max": xs[-1]}


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


GROUP_NAMES = (
    ("producer_inserts", "producers' INSERTs (their triggers included)"),
    ("tail_steps", "herald: the tail's steps"),
    ("delivery_records", "herald: delivery records"),
    ("counts", "herald: unread counts"),
    ("herald_other", "herald: everything else"),
)


def pg_cost_rows(scn, r, limit_key, limit):
    """PostgreSQL's time per statement group (µs per delivery), herald's
    total against its target, and the CPU seconds of the window."""
    cost = r and r.get("pg_cost")
    if not cost:
        return
    groups = cost["groups"]
    for key, name in GROUP_NAMES:
        g = groups.get(key) or {}
        row(scn, f"PostgreSQL µs per delivery: {name}", num(g.get("us_per_delivery"), 2), "", "", "", "", "")
    total = cost.get("herald_us_per_delivery")
    share = cost.get("herald_over_producer_inserts")
    if limit_key == "herald_over_producer_inserts":
        row(scn, "herald's PostgreSQL time, as a fraction of the producers' INSERT time",
            f"{num(total, 2)} µs per delivery ({num(share, 2)})", "", "", "", f"≤ {limit}",
            yes(None if share is None else share <= limit))
    else:
        row(scn, "herald's PostgreSQL time per delivery (µs)",
            f"{num(total, 2)} ({num(share, 2)} of the producers' INSERTs)", "", "", "", f"≤ {limit} µs",
            yes(None if total is None else total <= limit))
    cpu = r.get("cpu") or {}
    row(scn, "CPU seconds over the window: PostgreSQL (of it herald's connections) / herald",
        f"{num(cpu.get('postgres_seconds'), 1)} ({num(cpu.get('postgres_server_backends_seconds'), 1)}) / "
        f"{num(cpu.get('server_seconds'), 1)} in {num(r.get('window_seconds'), 1)} s", "", "", "", "", "")


def capacity_rows(r):
    """S2 open loop: each rate's latency and loss, and the highest rate that
    kept p99 within CAPACITY_P99_MS with nothing lost."""
    if not r or "steps" not in r:
        return
    base = pg100 and pg100["rows_per_second"]
    best = None
    for step in r["steps"]:
        p50, p99 = pct(step, "commit_to_receipt", "p50_ms"), pct(step, "commit_to_receipt", "p99_ms")
        ok = p99 is not None and p99 <= CAPACITY_P99_MS and step["lost"] == 0
        if ok and (best is None or step["rows_per_second"] > best["rows_per_second"]):
            best = step
        behind = (step.get("producer") or {}).get("behind")
        row("S2 open loop", f"{num(step['rows_per_second_asked'])} rows/s asked ({num(ratio(step['rows_per_second_asked'], base), 2)} of pgbench): "
            "committed rows/s; COMMIT→receipt p50 / p99 (ms); lost",
            f"{num(step['rows_per_second'])}; {num(p50, 1)} / {num(p99, 1)}; {step['lost']}"
            + (f" (producer behind its schedule {behind}×)" if behind else ""), "", "", "", "", "")
    frac = ratio(best and best["rows_per_second"], base)
    row("S2 capacity", f"highest committed rows/s with p99 ≤ {CAPACITY_P99_MS} ms and none lost, as a fraction of pgbench",
        f"{num(best and best['rows_per_second'])} ({num(frac, 2)})", "", f"pgbench {num(base)} rows/s", "", "≥ 0.45",
        yes(None if base is None else (frac or 0) >= 0.45))


h, p = S["UnicastLatency"]["herald"], S["UnicastLatency"]["peer"]
for q, limit in (("p50_ms", 2), ("p99_ms", 10)):
    hv, pv = pct(h, "commit_to_receipt", q), pct(p, "commit_to_receipt", q)
    row("S1 unicast latency", f"COMMIT→receipt {q[:3]} (ms)", num(hv, 2), num(pv, 2), "", num(ratio(hv, pv), 2),
        f"≤ {limit} ms", yes(None if hv is None else hv <= limit))
hv, pv = pct(h, "schedule_to_receipt", "p99_ms"), pct(p, "schedule_to_receipt", "p99_ms")
row("S1", "schedule→receipt p99 (ms)", num(hv, 2), num(pv, 2), "", num(ratio(hv, pv), 2), "", "")
hl = h and h.get("producer")
if hl:
    row("S1", "where schedule→receipt goes, p99 (ms): producer lag (of it timer) / BEGIN+INSERT / COMMIT→receipt",
        f"{num(pct(hl, 'lag', 'p99_ms'), 2)} ({num(pct(hl, 'timer_lag', 'p99_ms'), 2)}) / {num(pct(hl, 'insert', 'p99_ms'), 2)} / "
        f"{num(pct(h, 'commit_to_receipt', 'p99_ms'), 2)}", "", "", "", "", "")
row("S1", "lost / duplicated", lost(h), lost(p),
    "", "", "0 lost", yes(None if not h else h["lost"] == 0))
hv = pct(h, "commit_to_receipt", "p99_ms")
row("S1", "COMMIT→receipt p99 against before (ms)", num(hv, 2), "", f"before {BEFORE['s1_p99_ms']}", "",
    "no worse than before (within 2×, this machine's noise)",
    "not judged in --quick" if mode == "quick" else yes(None if hv is None else hv <= 2 * BEFORE["s1_p99_ms"]))

h, p = S["UnicastThroughput"]["herald"], S["UnicastThroughput"]["peer"]
hv, pv = h and h["sustained_deliveries_per_second"], p and p["sustained_deliveries_per_second"]
row("S2 unicast throughput", "deliveries/s", num(hv), num(pv), f"pgbench {num(pg100 and pg100['rows_per_second'])} rows/s",
    num(ratio(hv, pv), 1) + "×" if ratio(hv, pv) else "—", "≥ 50,000/s; ≥ 5× peer",
    met(None if hv is None else hv >= 50000, times_peer(hv, pv, 5)))
hr, pr = h and h["rows_per_second"], p and p["rows_per_second"]
row("S2", "rows committed/s, as a fraction of pgbench", f"{num(hr)} ({num(ratio(hr, pg100 and pg100['rows_per_second']), 2)})",
    f"{num(pr)} ({num(ratio(pr, pg100 and pg100['rows_per_second']), 2)})", "1.00", "", "≥ 0.55",
    yes(None if hr is None or not pg100 else hr / pg100["rows_per_second"] >= 0.55))
row("S2", "COMMIT→receipt p50 / p99 (ms)", f"{num(pct(h, 'commit_to_receipt', 'p50_ms'), 1)} / {num(pct(h, 'commit_to_receipt', 'p99_ms'), 1)}",
    f"{num(pct(p, 'commit_to_receipt', 'p50_ms'), 1)} / {num(pct(p, 'commit_to_receipt', 'p99_ms'), 1)}", "", "", "", "")
row("S2", "lost / duplicated", lost(h), lost(p), "", "", "0", yes(None if not h else h["lost"] == 0))
row("S2", "SENT delivery records", records(h), records(p), "", "", "all written", yes(records_met(h)))
pg_cost_rows("S2", h, "herald_over_producer_inserts", 0.25)
capacity_rows(S["UnicastCapacity"]["herald"])

h, p, b = S["Broadcast"]["herald"], S["Broadcast"]["peer"], S["Broadcast"]["bare"]
fh, fb = S["Fanout"]["herald"], S["Fanout"]["bare"]
sh, sb = spread(fh and fh.get("fanout_ms") or []), spread(fb and fb.get("fanout_ms") or [])
pv = p and p.get("fanout_median_ms")
sockets = (fb or fh or {}).get("connected")
floor_note = ""
if sb and sockets and sockets >= FLOOR_RANGE_FROM_SOCKETS:
    lo, hi = (x * sockets / 1000 for x in FLOOR_US_PER_SOCKET)
    if not lo <= sb["median"] <= hi:
        floor_note = f"floor {sb['median']:.1f} ms is outside its usual {lo:.0f}-{hi:.0f} ms: this run's machine was busy; no ratio"


def spread_cell(sp):
    return "—" if not sp else f"{sp['median']:,.1f} (p25–p75 {sp['p25']:,.1f}–{sp['p75']:,.1f}; {sp['min']:,.1f}–{sp['max']:,.1f})"


fan_ratio = None if floor_note or not sh or not sb else sh["median"] / sb["median"]
row("S3 broadcast fan-out",
    f"one broadcast to {sockets} sockets, median of {sh and sh['n']} samples taken in turn with the bare server's (ms)",
    spread_cell(sh), num(pv, 1), spread_cell(sb), num(ratio(sh and sh["median"], pv), 2), "≤ 1.3× floor", "—")
row("S3", "fan-out median, as a multiple of the floor's", floor_note or num(fan_ratio, 2), "", "1.00", "", "≤ 1.3×",
    "not judged (floor out of range)" if floor_note else yes(None if fan_ratio is None else fan_ratio <= 1.3))
row("S3", "fan-out lost / duplicated", lost(fh), "", lost(fb), "", "0", yes(None if not fh else fh["lost"] == 0))
hv, pv, bv = (r and r["sustained_deliveries_per_second"] for r in (h, p, b))
row("S3", "sustained deliveries/s", num(hv), num(pv), num(bv), num(ratio(hv, pv), 1) + "×" if ratio(hv, pv) else "—",
    "≥ 0.9× floor; ≥ 5× peer",
    met(None if hv is None or not bv else hv >= 0.9 * bv, times_peer(hv, pv, 5)))
row("S3", "lost / duplicated", lost(h), lost(p),
    lost(b), "", "0", yes(None if not h else h["lost"] == 0))
row("S3", "SENT delivery records", records(h), records(p), "", "", "all written", yes(records_met(h)))
pg_cost_rows("S3", h, "herald_us_per_delivery", 12)

h, p, b = S["Idle"]["herald"], S["Idle"]["peer"], S["Idle"]["bare"]
hv, pv, bv = h and h.get("rss_per_socket_kib"), p and p.get("rss_per_socket_kib"), b and b.get("rss_per_socket_kib")
row("S4 idle memory", f"RSS growth per socket at {h and h['connected']} sockets (KiB)", num(hv, 1), num(pv, 1), num(bv, 1),
    num(ratio(hv, pv), 2), "≤ 16 KiB; ≤ 1/3 of peer",
    met(None if hv is None else hv <= 16, None if hv is None or not pv else hv / pv <= 1 / 3))
row("S4", "RSS per socket against before (KiB)", num(hv, 1), "", f"before {BEFORE['s4_kib']}", "",
    "no worse than before (+10%)",
    "not judged in --quick" if mode == "quick" else yes(None if hv is None else hv <= 1.1 * BEFORE["s4_kib"]))

h, p = S["Storm"]["herald"], S["Storm"]["peer"]
row("S5 connect storm", f"{h and h['sockets']} clients at once: seconds until all connected", num(h and h["connect_seconds"], 2),
    num(p and p["connect_seconds"], 2), "", "", "≤ 10 s, none refused",
    yes(None if not h else h["connect_seconds"] <= 10 and h["refused"] == 0 and h["connected"] == h["sockets"]))
hv = h and h["connect_seconds"]
row("S5", "seconds until all connected, against before", num(hv, 2), "", f"before {BEFORE['s5_seconds']}", "",
    "no worse than before (+25%)",
    "not judged in --quick" if mode == "quick" else yes(None if hv is None else hv <= 1.25 * BEFORE["s5_seconds"]))
row("S5", "connected / refused", f"{num(h and h['connected'])} / {num(h and h['refused'])}",
    f"{num(p and p['connected'])} / {num(p and p['refused'])}", "", "", "", "")

push = find("Push", "herald")
s1, s1p = S["UnicastLatency"]["herald"], find("UnicastLatency", "herald-pushing")
rounds = (push or {}).get("rounds") or []
rates = sorted(r["pushes_per_second"] for r in rounds)
row("S6 Web Push", f"pushes/s to {num(push and push['subscribers'])} offline subscriptions on one push service, "
    f"median of {len(rounds)} broadcasts (first push to last)", num(rates[len(rates) // 2]) if rates else "—", "", "", "",
    "measured", "—")
row("S6", "COMMIT→last push, per broadcast (s; includes HERALD_PUSH_DELAY 1 s)",
    ", ".join(num(r["commit_to_last_seconds"], 1) for r in rounds) or "—", "", "", "", "", "")
row("S6", "pushes lost / duplicated; samples decrypted (failed)",
    f"{sum(r['lost'] for r in rounds)} / {sum(r['duplicated'] for r in rounds)}; "
    f"{num(push and push['sampled_and_decrypted'])} ({num(push and push['sample_failures'])})" if push else "—",
    "", "", "", "0 / 0", yes(None if not rounds else all(r["lost"] == 0 and r["duplicated"] == 0 for r in rounds)
                              and push["sample_failures"] == 0))
hv, bv = pct(s1p, "commit_to_receipt", "p99_ms"), pct(s1, "commit_to_receipt", "p99_ms")
row("S6", "S1's COMMIT→receipt p99 while pushing, against S1 alone in this run (ms)", num(hv, 2), "", num(bv, 2),
    num(ratio(hv, bv), 2), "measured", "—")
row("S6", "S1 while pushing: lost / duplicated", lost(s1p), "", "", "", "0", yes(None if not s1p else s1p["lost"] == 0))

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
w("Scenarios: S1 1,000 users with one socket each, single-row transactions at 500/s for 30 s from 4 connections sharing one schedule; "
  "S2 5,000 users, 100-row transactions from 4 connections as fast as they commit for 20 s; "
  "S2's open loop: the same transactions from 8 connections at fixed rates, 10 s each, on one set of sockets; "
  "S3 10,000 sockets in one sector, 15 broadcasts/s for 10 s; the fan-out samples: herald and the bare server "
  "up side by side with 10,000 sockets each, 15 single broadcasts to each taken in turn a second apart; "
  "S4 idle authenticated sockets (19,000: this sandbox caps a process at 20,000 open files); "
  "S5 10,000 clients connecting at once; "
  "S6 S1's load again, on a herald with Web Push on (HERALD_PUSH_DELAY 1 s), while the load generator's push service "
  "(it answers 201, counts every push per subscription and decrypts one in 50) receives 3 broadcasts to 10,000 "
  "offline users with a subscription each, one broadcast after another. Latency runs from the moment the load generator sends COMMIT "
  "(schedule→receipt from the open-loop schedule). Deliveries/s count from the first send to the last arrival, "
  "so a server that falls behind is measured by when it caught up. Every notification id is counted per socket. "
  "PostgreSQL's time per statement group is pg_stat_statements' planning plus execution time (track = top, so "
  "the producers' INSERT includes the triggers it fires) from the start of production until the last SENT record "
  "is written, per delivery made; herald's statements are told apart by the role it connects as. CPU seconds are "
  "/proc's utime + stime over the same window (PostgreSQL: every backend, exited ones included)."
  + (" `--quick` uses smaller sizes and shorter runs." if mode == "quick" else ""))
w("")
w("What limits each scenario on this machine, and what was tuned because of it: [benches/README.md](benches/README.md).")
print("\n".join(lines))
