#!/usr/bin/env python3
"""pgbench against inf_embed_query: worker mode vs local mode, same run.

For each client count, local mode (server without inf_ir preloaded: every
backend loads its own model) and worker mode (preloaded: one model host)
run back to back on the same cluster. From pgbench's per-transaction log:
steady-state throughput and p50/p99 latency (each client's first call, which
in local mode loads the model, is reported apart); a sampler sums RSS and
PSS of every process under the postmaster (the model host included) and
keeps the peak.
"""
import argparse
import glob
import os
import statistics
import subprocess
import tempfile
import threading
import time

SCRIPT = """\\set id random(1, 1000000)
SELECT inf_embed_query('Find passages that answer the question', 'what is the meaning of query number ' || :id) IS NOT NULL;
"""


def sh(cmd, **kw):
    return subprocess.run(cmd, shell=True, check=True, text=True, capture_output=True, **kw).stdout


def set_preload(project, cluster, on):
    sh(f"bash -c 'source {project}/scripts/lib/common.sh && set_preload {cluster} {'yes' if on else 'no'}'")


def tree(root):
    """The postmaster and all its descendants (the model host is a grandchild)."""
    children = {}
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(pid))
            except (OSError, IndexError, ValueError):
                pass
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


def memory_kib(pids):
    rss = pss = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Rss:"):
                        rss += int(line.split()[1])
                    elif line.startswith("Pss:"):
                        pss += int(line.split()[1])
        except OSError:
            pass
    return rss, pss


class Sampler(threading.Thread):
    def __init__(self, postmaster):
        super().__init__(daemon=True)
        self.postmaster, self.stop, self.peak = postmaster, threading.Event(), (0, 0, 0)

    def run(self):
        while not self.stop.is_set():
            pids = tree(self.postmaster)
            rss, pss = memory_kib(pids)
            if pss > self.peak[1]:
                self.peak = (rss, pss, len(pids))
            time.sleep(0.5)


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def run(args, mode, clients, workdir):
    set_preload(args.project, args.cluster, mode == "worker")
    psql = f"psql -h 127.0.0.1 -p {args.port} -U postgres -X -Atq"
    sh(f"{psql} -c 'CREATE EXTENSION IF NOT EXISTS inf_ir'")
    # Worker mode: the host loads the model once per server; do it before timing.
    sh(f"{psql} -c \"SELECT inf_embed_query('warm', 'up') IS NOT NULL\"")
    with open(os.path.join(args.cluster, "postmaster.pid")) as f:
        postmaster = int(f.readline())
    script = os.path.join(workdir, "embed_query.sql")
    with open(script, "w") as f:
        f.write(SCRIPT)
    prefix = os.path.join(workdir, f"{mode}_{clients}")
    sampler = Sampler(postmaster)
    sampler.start()
    sh(f"pgbench -n -h 127.0.0.1 -p {args.port} -U postgres -f {script} -c {clients} -j {min(clients, 8)} "
       f"-T {args.seconds} -l --log-prefix={prefix} postgres")
    sampler.stop.set()
    sampler.join()
    status = sh(f"{psql} -F' ' -c 'SELECT requests, batches FROM inf_ir.worker_status'").split() \
        if mode == "worker" else None
    rows = []
    for path in glob.glob(prefix + ".*"):
        with open(path) as f:
            for line in f:
                c, n, latency_us, _, epoch, us = line.split()[:6]
                end = int(epoch) + int(us) / 1e6
                rows.append((int(c), int(n), int(latency_us) / 1000.0, end))
    first = {}
    for c, n, lat, end in rows:
        if c not in first or n < first[c][0]:
            first[c] = (n, lat, end)
    steady_start = max(end for _, _, end in first.values())
    steady = [(lat, end) for c, n, lat, end in rows if n != first[c][0] and end > steady_start]
    window = max(end for _, end in steady) - steady_start if steady else 0
    lat = [l for l, _ in steady]
    return {
        "mode": mode, "clients": clients, "tx": len(rows), "steady_tx": len(steady),
        "tps": len(steady) / window if window else 0.0,
        "p50": statistics.median(lat) if lat else float("nan"), "p99": pct(lat, 0.99) if lat else float("nan"),
        "first_call_p50": statistics.median(l for _, l, _ in first.values()),
        "rss_mib": sampler.peak[0] / 1024, "pss_mib": sampler.peak[1] / 1024, "processes": sampler.peak[2],
        "worker_requests_per_batch": (int(status[0]) / int(status[1])) if status and int(status[1]) else None,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--cluster", required=True)
    ap.add_argument("--project", required=True)
    ap.add_argument("--clients", default="1,8,32")
    ap.add_argument("--seconds", type=int, default=30)
    args = ap.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as workdir:
        os.chmod(workdir, 0o777)
        for clients in [int(c) for c in args.clients.split(",")]:
            for mode in ("local", "worker"):
                r = run(args, mode, clients, workdir)
                results.append(r)
                print(f"{mode:6} clients={clients:2}  tps={r['tps']:7.1f}  p50={r['p50']:7.1f} ms  "
                      f"p99={r['p99']:8.1f} ms  first call p50={r['first_call_p50']:7.1f} ms  "
                      f"peak RSS={r['rss_mib']:7.0f} MiB  PSS={r['pss_mib']:7.0f} MiB  "
                      f"({r['processes']} processes, {r['steady_tx']}/{r['tx']} tx steady)"
                      + (f"  requests/batch={r['worker_requests_per_batch']:.2f}"
                         if r['worker_requests_per_batch'] else ""), flush=True)
    print("\nclients  worker/local throughput  worker/local p99  worker/local PSS")
    for clients in sorted({r["clients"] for r in results}):
        lo = next(r for r in results if r["clients"] == clients and r["mode"] == "local")
        wo = next(r for r in results if r["clients"] == clients and r["mode"] == "worker")
        print(f"{clients:7}  {wo['tps'] / lo['tps']:23.2f}  {wo['p99'] / lo['p99']:16.2f}  "
              f"{wo['pss_mib'] / lo['pss_mib']:16.2f}")


if __name__ == "__main__":
    main()
