#!/usr/bin/env python3
"""Smoke test of qcache-bench: every workload on every target, briefly, and the JSON's shape.

    bench_smoke_test.py QCACHE_BENCH REPO_ROOT

Runs blog, point and wiki for a fraction of a second per cell on sqlite, and, when
QCACHE_PG is set (scripts/test exports it), on postgresql and soci-pg, plus pgpool when
scripts/pgpool can start pgpool-II in front of that PostgreSQL. Checks that the JSON has one
complete object per target x mode, ratios, and stale_entries == 0 everywhere. Under CI=true
a missing PostgreSQL is a failure, not a skip. Figures are not checked (too short to mean
anything).
"""
import json
import os
import subprocess
import sys
import tempfile
import time

BENCH, ROOT = sys.argv[1], sys.argv[2]
CI = os.environ.get("CI") == "true"
failures = []


def log(msg):
    print(msg, flush=True)


def check_json(path, targets, label):
    with open(path) as f:
        doc = json.load(f)
    for key in ("machine", "workload", "results", "ratios", "stale_entries", "threads", "reps"):
        if key not in doc:
            failures.append(f"{label}: JSON lacks '{key}'")
            return
    if doc["stale_entries"] != 0:
        failures.append(f"{label}: stale_entries = {doc['stale_entries']}")
    seen = set()
    for r in doc["results"]:
        seen.add((r["target"], r["mode"]))
        if not r["available"]:
            if r["target"] in ("postgresql", "pgpool") or r["mode"] == "uncached":
                failures.append(f"{label}: {r['target']} {r['mode']} not run: {r.get('why_unavailable')}")
            else:
                log(f"  note: {r['target']} {r['mode']} not run: {r.get('why_unavailable')}")
            continue
        where = f"{label}: {r['target']} {r['mode']}"
        for key in ("throughput_ops", "latency_us", "ops", "hit_ratio", "db_per_op",
                    "invalidations", "cache_bytes", "stale_entries", "latency_cdf_us", "errors"):
            if key not in r:
                failures.append(f"{where}: lacks '{key}'")
        if r["ops"] <= 0 or r["throughput_ops"]["median"] <= 0:
            failures.append(f"{where}: no operations ran")
        if r["errors"] * 10 > max(1, r["ops"]):
            failures.append(f"{where}: {r['errors']} errors in {r['ops']} operations")
        lat = r["latency_us"]
        if not (0 < lat["p50"] <= lat["p95"] <= lat["p99"]):
            failures.append(f"{where}: latency percentiles out of order: {lat}")
        if r["target"] == "pgpool":
            # pgpool-II's own cache is the peer being measured; its stale-set race
            # (PGPOOL.md) is reported, not a qcache failure.
            if r["stale_entries"] or r.get("verify_mismatches"):
                log(f"  note: {where}: pgpool-II served {r['stale_entries']} stale entries, "
                    f"{r.get('verify_mismatches')} stale sampled reads")
        elif r["stale_entries"] != 0 or r.get("verify_mismatches"):
            failures.append(f"{where}: stale_entries = {r['stale_entries']}, "
                            f"verify_mismatches = {r.get('verify_mismatches')}")
        if r["mode"] == "cached":
            if not r["stale_checked"] or r["stale_checked_entries"] <= 0:
                failures.append(f"{where}: freshness check did not run")
            if r["target"] != "pgpool" and r["hit_ratio"] is None:
                failures.append(f"{where}: no cache counters")
        if r["db_per_op"] is None and not (r["target"] == "pgpool" and r["mode"] == "cached"):
            failures.append(f"{where}: no database statement count")
    for t in targets:
        for m in ("uncached", "cached"):
            if (t, m) not in seen:
                failures.append(f"{label}: no result for {t} {m}")
    if not doc["ratios"]:
        failures.append(f"{label}: no ratios")


def run(workload, targets, tmp, extra=()):
    label = f"{workload} on {','.join(targets)}"
    out = os.path.join(tmp, f"{workload}-{'-'.join(targets)}.json")
    cmd = [BENCH, "--workload", workload, "--target", ",".join(targets), "--scale", "0.05",
           "--threads", "2", "--reps", "1", "--duration", "0.4", "--warmup", "0.2",
           "--verify", "--verify-rate", "0.2", "--stats-settle", "0", "--quiet",
           "--allow-debug", "--database", "qcache_bench_smoke",
           "--sqlite-file", os.path.join(tmp, f"{workload}.sqlite"), "--json", out, *extra]
    t0 = time.monotonic()
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    log(f"{label}: exit {p.returncode} in {time.monotonic() - t0:.1f} s")
    if p.returncode != 0:
        failures.append(f"{label}: exit status {p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-2000:]}")
        return
    check_json(out, targets, label)


def start_pgpool(tmp):
    """Starts pgpool-II in front of QCACHE_PG_PORT; returns its run dir or None."""
    port = os.environ.get("QCACHE_PG_PORT")
    script = os.path.join(ROOT, "scripts", "pgpool")
    if not port or not os.path.exists(script):
        return None, "QCACHE_PG_PORT or scripts/pgpool missing"
    if subprocess.run(["sh", "-c", "command -v pgpool"], capture_output=True).returncode != 0:
        return None, "pgpool-II is not installed (scripts/pgpool start installs Debian's pgpool2)"
    d = os.path.join(tmp, "pgpool")
    os.chmod(tmp, 0o755)
    env = dict(os.environ, QCACHE_PGPOOL_CACHE_SIZE="32MB")
    p = subprocess.run([script, "start", d, port], capture_output=True, text=True, timeout=40, env=env)
    if p.returncode != 0:
        return None, "scripts/pgpool start failed: " + p.stderr[-500:]
    for line in open(os.path.join(d, "pgpool.env")):
        if line.startswith("export QCACHE_PGPOOL="):
            os.environ["QCACHE_PGPOOL"] = line.split("=", 1)[1].strip().strip("'")
    return d, None


def main():
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="qcache-bench-smoke.") as tmp:
        for w in ("blog", "point", "wiki"):
            run(w, ["sqlite"], tmp, ["--write-ratio", "0.1"] if w == "point" else [])
        if not os.environ.get("QCACHE_PG"):
            msg = "QCACHE_PG is not set: PostgreSQL targets not run (scripts/test starts one)"
            if CI:
                failures.append(msg + " — a failure under CI=true")
            else:
                log("SKIP: " + msg)
        else:
            pool_dir, why = start_pgpool(tmp)
            try:
                targets = ["postgresql", "soci-pg"] + (["pgpool"] if pool_dir else [])
                if not pool_dir:
                    log("SKIP pgpool target: " + why)
                for w in ("blog", "point", "wiki"):
                    run(w, targets, tmp, ["--write-ratio", "0.1"] if w == "point" else [])
            finally:
                if pool_dir:
                    subprocess.run([os.path.join(ROOT, "scripts", "pgpool"), "stop", pool_dir],
                                   capture_output=True, timeout=40)
    log(f"total {time.monotonic() - t0:.1f} s")
    for f in failures:
        print("FAIL: " + f, file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
