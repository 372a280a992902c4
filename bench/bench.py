#!/usr/bin/env python3
"""Side-by-side benchmark of training-collector against the seed (issue 7).

usage: bench/bench.py [--sizes 100000,1000000] [--bin target/release/training-collector]
                      [--work target/bench] [--latency-seconds 20] [--idle-seconds 10]
                      [--skip-seed] [--only ingest,export,idle,latency,manyfiles] [--many-files 10000]
                      [--repeat 3] [--seed-repeat 1] [--json FILE]

Normally run through bench/run.sh, which builds the release binary first. Logs are made by
../shared/bench/genlog.py (default style "flat", seed 7) and cached in the work dir.

Measured, in one run:
 1. ingest: from the daemon's start until the log's checkpoint offset equals its size (every
    line in fsynced segments and checkpointed); peak RSS = VmHWM at that moment. The seed:
    seed_baseline.py's capture_s on the same log, peak RSS of its capture phase.
 2. export: `training-collector export` on the ingested data dir, into a fresh output
    directory each run as the seed's (wall time of the process, peak RSS from wait4) against the seed's export_for_training in seed_baseline.py
    (export_s; peak RSS of the export phase, VmHWM reset with /proc/self/clear_refs).
    First exports (state/export-cache removed before each run, so each prepares every
    segment and builds the cache), then exports again with the prepared cache of the run
    before (same bytes out, checked), then exports after the daemon prepared the sealed
    segments ahead (export.prepare_ahead: the daemon started with no cache, until its
    background thread has an entry for every sealed segment; its time and CPU are a row too),
    then first exports with near-duplicate detection off
    (export.near_dup_threshold = 0), the work the seed's export does (it has no
    near-duplicate detection).
 3. idle CPU: the daemon on a fully read log, CPU time of all its threads over N seconds
    (/proc/<pid>/task/*/schedstat, nanoseconds).
 4. latency: lines appended at a steady 1,000 lines/s to a fresh log, default config; for
    each line the time until /metrics counts it (buffered), until it is in the open
    segment (written), and until its checkpoint covers it (fsynced + checkpointed).
 5. many files: the daemon (default config) on 10,000 one-line files under a `**` glob, once
    all are read: its CPU over N seconds idle, then over N seconds while 1,000 lines/s are
    appended to 10 of them, with the full and light polls each phase made.
"""
import argparse
import bisect
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
SHARED = os.path.normpath(os.path.join(REPO, "..", "shared", "bench"))
MIB = 1024 * 1024


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def make_log(work, n):
    path = os.path.join(work, f"log_{n}.jsonl")
    if not os.path.exists(path):
        log(f"generating {path} with genlog.py {n} ...")
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            subprocess.run([sys.executable, os.path.join(SHARED, "genlog.py"), str(n)], stdout=f, check=True)
        os.rename(tmp, path)
    return path


def write_config(d, paths, extra=""):
    os.makedirs(d, exist_ok=True)
    cfg = os.path.join(d, "config.toml")
    with open(cfg, "w") as f:
        f.write(
            f'data_dir = "{d}/data"\nlog_level = "warn"\n'
            f"[input]\npaths = {json.dumps(paths)}\n"
            f'[spool]\ndir = "{d}/spool"\n' + extra
        )
    return cfg


# The ingest config: everything default except a big buffer and a short durable interval, so
# "checkpointed" follows "read" closely (fsync stays on).
INGEST_EXTRA = '[buffer]\nsize = 5000\nflush_interval = "100ms"\n[metrics]\nlisten = ""\n'


def proc_status(pid, key):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except FileNotFoundError:
        return None
    return None


def checkpoint_offset(cp_path, log_path):
    try:
        with open(cp_path) as f:
            d = json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
        return -1
    for e in d.get("files", []):
        if e.get("path") == log_path:
            return e.get("offset", -1)
    return -1


def stop(p):
    p.send_signal(signal.SIGTERM)
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    return ru


def bench_ingest_keep(ing, work, logp, n):
    # Each run has its own dir; keep the median run's as ingest_<n> for export and idle.
    d = os.path.join(work, f"ingest_{n}")
    if ing["dir"] != d:
        shutil.rmtree(d, ignore_errors=True)
        # Paths inside the config are absolute: write a fresh config for the moved dir.
        os.rename(ing["dir"], d)
        ing["dir"], ing["cfg"] = d, write_config(d, [logp], INGEST_EXTRA)
    for other in os.listdir(work):
        if other.startswith(f"ingest_{n}_run"):
            shutil.rmtree(os.path.join(work, other), ignore_errors=True)


RUN = [0]


def bench_ingest(binary, work, logp, n):
    RUN[0] += 1
    d = os.path.join(work, f"ingest_{n}_run{RUN[0]}")
    shutil.rmtree(d, ignore_errors=True)
    cfg = write_config(d, [logp], INGEST_EXTRA)
    size = os.path.getsize(logp)
    cp = os.path.join(d, "data", "state", "checkpoints.json")
    os.sync()  # start every run without the previous run's dirty pages still being written
    t0 = time.monotonic()
    p = subprocess.Popen([binary, "--config", cfg, "run"])
    while True:
        if checkpoint_offset(cp, logp) == size:
            break
        if p.poll() is not None:
            raise SystemExit(f"daemon exited early with {p.returncode}")
        time.sleep(0.002)
    secs = time.monotonic() - t0
    hwm = proc_status(p.pid, "VmHWM")
    cpu = process_cpu_s(p.pid)
    stop(p)
    lines = sum(1 for _ in open(logp, "rb"))
    return {"secs": secs, "cpu": cpu, "bytes": size, "lines": lines, "rss": hwm, "dir": d, "cfg": cfg}


SEED_WRAPPER = r"""
import json, os, runpy, sys, time
sys.path.insert(0, SHARED)
import training_collector as tc
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
orig = tc.TrainingCollector.export_for_training
def export(self, *a, **k):
    phases["capture_rss"] = hwm()
    with open("/proc/self/clear_refs", "w") as f:  # reset the peak to the current RSS
        f.write("5")
    r = orig(self, *a, **k)
    phases["export_rss"] = hwm()
    return r
phases = {}
tc.TrainingCollector.export_for_training = export
sys.argv = [os.path.join(SHARED, "seed_baseline.py")] + sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
print(json.dumps(phases))
"""


def bench_seed(work, logp, n):
    out = os.path.join(work, f"seed_{n}")
    shutil.rmtree(out, ignore_errors=True)
    code = f"SHARED = {SHARED!r}\n" + SEED_WRAPPER
    os.sync()
    r = subprocess.run([sys.executable, "-c", code, logp, out], capture_output=True, text=True, check=True)
    lines = [json.loads(l) for l in r.stdout.splitlines() if l.startswith("{")]
    res = lines[0]
    res.update(lines[1])
    shutil.rmtree(out, ignore_errors=True)
    return res


def median_seed(runs):
    """The seed's phases, each the median over runs (capture and export separately, each with
    the peak RSS of that same run), so one slow seed run does not set the ratios."""
    by_capture = sorted(runs, key=lambda r: r["capture_s"])
    by_export = sorted(runs, key=lambda r: r["export_s"])
    mid_c, mid_e = by_capture[len(runs) // 2], by_export[len(runs) // 2]
    res = dict(mid_c)
    for key in ("export_s", "export_rss", "after_filtering"):
        if key in mid_e:
            res[key] = mid_e[key]
    res["capture_all_s"] = [round(r["capture_s"], 2) for r in by_capture]
    res["export_all_s"] = [round(r["export_s"], 3) for r in by_export]
    return res


# The seed's export drops exact duplicates of a 100-character prompt prefix and nothing else;
# ours also finds near duplicates (MinHash). This config turns that off, to show the cost of
# the same work beside the default's.
NO_NEAR_DUP = "[export]\nnear_dup_threshold = 0\n"


def no_near_dup_config(ing):
    with open(ing["cfg"]) as f:
        text = f.read()
    cfg = os.path.join(ing["dir"], "config-no-near-dup.toml")
    with open(cfg, "w") as f:
        f.write(text + NO_NEAR_DUP)
    return cfg


def bench_export(binary, ing, cfg=None, cached=False):
    # Into a fresh directory, as the seed's export writes into a fresh one: replacing the last
    # run's 100 MB output would add the freeing of its blocks (15-30 ms in the rename on this
    # VM, whose ext4 is mounted with `discard`) to every run but the first.
    # Not `cached`: the prepared cache is removed first, so the run is a first export (which
    # builds the cache); `cached`: the previous run's cache is read.
    if not cached:
        shutil.rmtree(os.path.join(ing["dir"], "data", "state", "export-cache"), ignore_errors=True)
    out = os.path.join(ing["dir"], "bench_export")
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    os.sync()
    t0 = time.monotonic()
    p = subprocess.Popen([binary, "--config", cfg or ing["cfg"], "export", "--output",
                          os.path.join(out, "training_export.jsonl")], stdout=subprocess.PIPE)
    out = p.stdout.read()
    _, status, ru = os.wait4(p.pid, 0)
    secs = time.monotonic() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit("export failed")
    return {"secs": secs, "rss": ru.ru_maxrss * 1024, "report": json.loads(out)}


def bench_prepare_ahead(binary, ing):
    """The daemon started on the ingested data dir with no prepared cache (as after an upgrade,
    or segments sealed by its last shutdown): how long until its background thread has an
    entry for every sealed example segment, and the daemon's CPU time meanwhile."""
    data = os.path.join(ing["dir"], "data")
    cache = os.path.join(data, "state", "export-cache")
    shutil.rmtree(cache, ignore_errors=True)
    sealed = {f for f in os.listdir(data) if f.startswith("examples_") and f.endswith(".jsonl")}
    os.sync()
    t0 = time.monotonic()
    p = subprocess.Popen([binary, "--config", ing["cfg"], "run"])
    while True:
        entries = set()
        for d in os.listdir(cache) if os.path.isdir(cache) else []:
            entries |= {e[:-len(".prep")] for e in os.listdir(os.path.join(cache, d)) if e.endswith(".prep")}
        if sealed <= entries:
            break
        if p.poll() is not None:
            raise SystemExit(f"daemon exited early with {p.returncode}")
        time.sleep(0.005)
    secs = time.monotonic() - t0
    cpu = process_cpu_s(p.pid)
    stop(p)
    return {"secs": secs, "cpu": cpu, "segments": len(sealed)}


def export_rows(rows, label, time_label, run, seed):
    """An export's time and peak RSS rows, each beside the seed's export when there is one."""
    line = [f"{label}, {time_label}", f"{run['secs']:.3f} s"]
    if seed:
        line += [f"{seed['export_s']:.3f} s", f"{seed['export_s'] / run['secs']:.1f}x"]
    rows.append(line)
    line = [f"{label}, peak RSS", fmt_rss(run["rss"])]
    if seed:
        line += [fmt_rss(seed["export_rss"]), f"{seed['export_rss'] / run['rss']:.1f}x less"]
    rows.append(line)


def process_cpu_s(pid):
    # utime + stime of the whole process, threads that have exited included (the per-task
    # schedstat below misses those), at clock-tick resolution.
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def task_cpu_ns(pid):
    total = 0
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{t}/schedstat") as f:
                total += int(f.read().split()[0])
        except FileNotFoundError:
            pass
    return total


def task_switches(pid):
    total = 0
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{t}/status") as f:
                for line in f:
                    if "ctxt_switches" in line:
                        total += int(line.split()[1])
        except FileNotFoundError:
            pass
    return total


def bench_idle(binary, ing, seconds):
    # The ingest data dir: its log is checkpointed at EOF, so there is nothing to read.
    p = subprocess.Popen([binary, "--config", ing["cfg"], "run"])
    time.sleep(2.0)
    c0, s0, t0 = task_cpu_ns(p.pid), task_switches(p.pid), time.monotonic()
    time.sleep(seconds)
    c1, s1, t1 = task_cpu_ns(p.pid), task_switches(p.pid), time.monotonic()
    stop(p)
    return {"cpu_ns": c1 - c0, "secs": t1 - t0, "switches": s1 - s0}


def metrics_value(port, name):
    s = socket.create_connection(("127.0.0.1", port), timeout=2)
    s.sendall(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
    chunks = []
    while True:
        b = s.recv(65536)
        if not b:
            break
        chunks.append(b)
    s.close()
    body = b"".join(chunks).decode()
    for line in body.splitlines():
        if line.startswith(name + " "):
            return int(float(line.split()[1]))
    return None


MANY_LINE = ('{"event": "interaction", "prompt": "What is the minimum seam overlap for a TPO roof?", '
             '"response": "Most TPO manufacturers require a 2 inch minimum heat-welded seam overlap."}\n')


def bench_many_files(binary, work, files, seconds, rate=1000, writers=10):
    """CPU of the daemon tailing `files` matching files under a `**` glob (default config:
    rescan_interval 1 s): idle over `seconds`, then while `rate` lines/s are appended to
    `writers` of them. Also the polls each phase made (metrics)."""
    d = os.path.join(work, f"many_{files}")
    logs = os.path.join(d, "logs")
    if not os.path.isdir(logs):
        tmp = logs + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        for i in range(files):
            sub = os.path.join(tmp, f"svc{i // 100:03d}")
            os.makedirs(sub, exist_ok=True)
            with open(os.path.join(sub, f"app{i % 100:02d}.jsonl"), "w") as f:
                f.write(MANY_LINE)
        os.rename(tmp, logs)
    for sub in ("data", "spool"):
        shutil.rmtree(os.path.join(d, sub), ignore_errors=True)
    port = free_port()
    cfg = write_config(d, [os.path.join(logs, "**", "*.jsonl")], f'[metrics]\nlisten = "127.0.0.1:{port}"\n')
    # Appends grow the files from one run to the next: count what this run reads.
    total = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(logs) for f in fs)
    want_lines = total // len(MANY_LINE)
    p = subprocess.Popen([binary, "--config", cfg, "run"])
    deadline = time.monotonic() + 120
    while True:
        try:
            if metrics_value(port, "training_collector_lines_read_total") == want_lines:
                break
        except OSError:
            pass
        if time.monotonic() > deadline:
            stop(p)
            raise SystemExit("many files: the daemon did not read every file in 120 s")
        time.sleep(0.1)
    time.sleep(2.0)
    polls = lambda: (metrics_value(port, "training_collector_full_polls_total") or 0,
                     metrics_value(port, "training_collector_light_polls_total") or 0)
    res = {"files": files}
    (f0, l0), c0, t0 = polls(), task_cpu_ns(p.pid), time.monotonic()
    time.sleep(seconds)
    (f1, l1), c1, t1 = polls(), task_cpu_ns(p.pid), time.monotonic()
    res["idle"] = {"cpu_ns": c1 - c0, "secs": t1 - t0, "full_polls": f1 - f0, "light_polls": l1 - l0}
    outs = [open(os.path.join(logs, f"svc{i:03d}", "app00.jsonl"), "a") for i in range(writers)]
    per_tick = max(1, rate // 100)
    written = 0
    (f0, l0), c0, t0 = polls(), task_cpu_ns(p.pid), time.monotonic()
    next_tick = t0
    while time.monotonic() - t0 < seconds:
        for _ in range(per_tick):
            w = outs[written % writers]
            w.write(MANY_LINE)
            w.flush()
            written += 1
        next_tick += 0.01
        time.sleep(max(0.0, next_tick - time.monotonic()))
    (f1, l1), c1, t1 = polls(), task_cpu_ns(p.pid), time.monotonic()
    for w in outs:
        w.close()
    res["writing"] = {"cpu_ns": c1 - c0, "secs": t1 - t0, "full_polls": f1 - f0, "light_polls": l1 - l0,
                      "rate": written / (t1 - t0)}
    deadline = time.monotonic() + 60
    while metrics_value(port, "training_collector_lines_read_total") != want_lines + written:
        if time.monotonic() > deadline:
            stop(p)
            raise SystemExit("many files: appended lines were not all read")
        time.sleep(0.1)
    stop(p)
    return res


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def bench_latency(binary, work, src_log, seconds, rate=1000):
    d = os.path.join(work, "latency")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    logp = os.path.join(d, "app.jsonl")
    open(logp, "w").close()
    port = free_port()
    cfg = write_config(d, [logp], f'[metrics]\nlisten = "127.0.0.1:{port}"\n')
    n = int(seconds * rate)
    lines = []
    with open(src_log, "rb") as f:
        for line in f:
            if b'"event": "interaction"' in line:
                lines.append(line)
                if len(lines) == n:
                    break
    ends = []  # byte offset just past each line
    pos = 0
    for line in lines:
        pos += len(line)
        ends.append(pos)
    p = subprocess.Popen([binary, "--config", cfg, "run"])
    for _ in range(200):
        try:
            if metrics_value(port, "training_collector_lines_read_total") is not None:
                break
        except OSError:
            time.sleep(0.05)
    sys.setswitchinterval(0.0005)
    appended = [0.0] * n
    seen_buf, seen_written, seen_durable = [], [], []  # (time, count) whenever the count grows
    done = threading.Event()
    data = os.path.join(d, "data")
    cp = os.path.join(data, "state", "checkpoints.json")

    def poll_metrics():
        last = 0
        while not done.is_set():
            try:
                v = metrics_value(port, "training_collector_lines_read_total")
            except OSError:
                v = None
            t = time.monotonic()
            if v is not None and v > last:
                seen_buf.append((t, v))
                last = v
            time.sleep(0.0005)

    def poll_files():
        last_w = last_d = 0
        offsets = {}
        count = 0
        while not done.is_set():
            t = time.monotonic()
            # Examples written to segments (open or sealed): count newlines as they grow.
            for name in sorted(os.listdir(data)) if os.path.isdir(data) else []:
                if not name.startswith("examples_"):
                    continue
                base = name[:-5] if name.endswith(".open") else name
                path = os.path.join(data, name)
                try:
                    with open(path, "rb") as f:
                        f.seek(offsets.get(base, 0))
                        chunk = f.read()
                except FileNotFoundError:
                    continue
                if chunk:
                    cut = chunk.rfind(b"\n") + 1
                    count += chunk[:cut].count(b"\n")
                    offsets[base] = offsets.get(base, 0) + cut
            if count > last_w:
                seen_written.append((t, count))
                last_w = count
            off = checkpoint_offset(cp, logp)
            k = bisect.bisect_right(ends, off) if off > 0 else 0
            if k > last_d:
                seen_durable.append((t, k))
                last_d = k
            time.sleep(0.001)

    th = [threading.Thread(target=poll_metrics), threading.Thread(target=poll_files)]
    for t in th:
        t.start()
    fd = os.open(logp, os.O_WRONLY | os.O_APPEND)
    start = time.monotonic() + 0.2
    for i, line in enumerate(lines):
        due = start + i / rate
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
        os.write(fd, line)
        appended[i] = time.monotonic()
    os.close(fd)
    achieved = n / (appended[-1] - appended[0]) if n > 1 else 0
    # Wait until everything is durable (at most two flush intervals of the default 5 s).
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and (not seen_durable or seen_durable[-1][1] < n):
        time.sleep(0.05)
    done.set()
    for t in th:
        t.join()
    stop(p)

    def lat(seen):
        out = []
        j = 0
        for i in range(n):
            while j < len(seen) and seen[j][1] < i + 1:
                j += 1
            if j == len(seen):
                break
            out.append(seen[j][0] - appended[i])
        return out

    res = {"lines": n, "rate": achieved}
    for key, seen in (("buffered", seen_buf), ("written", seen_written), ("durable", seen_durable)):
        xs = lat(seen)
        res[key] = {"n": len(xs), "p50": pct(xs, 0.5), "p99": pct(xs, 0.99), "max": max(xs)} if xs else None
    return res


def fmt_rss(b):
    return f"{b / MIB:.1f} MiB" if b else "n/a"


def machine():
    """CPU model, cores and the vector extensions the binary's fast paths choose between
    (rounds have run on hosts with and without AVX-512; their figures differ)."""
    model, flags = "unknown CPU", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and model == "unknown CPU":
                    model = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    simd = [x for x in ("avx512f", "avx512bw", "avx2", "bmi2", "sha_ni") if x in flags]
    return {"cpu": model, "cores": os.cpu_count(), "simd": simd}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="100000")
    ap.add_argument("--bin", default=os.path.join(REPO, "target", "release", "training-collector"))
    ap.add_argument("--work", default=os.path.join(REPO, "target", "bench"))
    ap.add_argument("--latency-seconds", type=float, default=20)
    ap.add_argument("--idle-seconds", type=float, default=10)
    ap.add_argument("--skip-seed", action="store_true")
    ap.add_argument("--repeat", type=int, default=3,
                    help="ingest and export runs per size; the medians are reported")
    ap.add_argument("--seed-repeat", type=int, default=1,
                    help="seed runs per size; the median capture and export times are reported")
    ap.add_argument("--only", default="ingest,export,idle,latency,manyfiles")
    ap.add_argument("--many-files", type=int, default=10000,
                    help="matching files for the many-files measurement")
    ap.add_argument("--json", help="also write all results to this file")
    a = ap.parse_args()
    work = os.path.abspath(a.work)
    os.makedirs(work, exist_ok=True)
    only = set(a.only.split(","))
    sizes = [int(s) for s in a.sizes.split(",")]
    results = {"sizes": {}}
    rows = []
    for n in sizes:
        logp = make_log(work, n)
        r = results["sizes"][n] = {}
        log(f"[{n}] ingest (training-collector) ...")
        runs = [bench_ingest(a.bin, work, logp, n) for _ in range(a.repeat)]
        runs.sort(key=lambda x: x["secs"])
        ing = r["ingest"] = runs[len(runs) // 2]  # the median run (its data dir is kept)
        r["ingest_all_secs"] = [round(x["secs"], 3) for x in runs]
        log(f"[{n}] ingest runs: {r['ingest_all_secs']} s")
        bench_ingest_keep(ing, work, logp, n)
        seed = None
        if not a.skip_seed and (only & {"ingest", "export"}):
            log(f"[{n}] seed_baseline.py (capture + export) x{a.seed_repeat} ...")
            seed = r["seed"] = median_seed([bench_seed(work, logp, n) for _ in range(a.seed_repeat)])
            if a.seed_repeat > 1:
                log(f"[{n}] seed capture runs: {seed['capture_all_s']} s, export runs: {seed['export_all_s']} s")
        mb = ing["bytes"] / 1e6
        if "ingest" in only:
            ours_mbs = mb / ing["secs"]
            line = [f"ingest {n:,}: MB/s", f"{ours_mbs:.1f}"]
            if seed:
                seed_mbs = mb / seed["capture_s"]
                line += [f"{seed_mbs:.2f}", f"{ours_mbs / seed_mbs:.1f}x"]
            rows.append(line)
            line = [f"ingest {n:,}: lines/s", f"{ing['lines'] / ing['secs']:,.0f}"]
            if seed:
                line += [f"{ing['lines'] / seed['capture_s']:,.0f}", f"{seed['capture_s'] / ing['secs']:.1f}x"]
            rows.append(line)
            line = [f"ingest {n:,}: time (median of {a.repeat})", f"{ing['secs']:.2f} s (CPU {ing['cpu']:.2f} s)"]
            if seed:
                of = f" (median of {a.seed_repeat})" if a.seed_repeat > 1 else ""
                line += [f"{seed['capture_s']:.2f} s{of}", ""]
            rows.append(line)
            line = [f"ingest {n:,}: peak RSS", fmt_rss(ing["rss"])]
            if seed:
                line += [fmt_rss(seed["capture_rss"]), f"{seed['capture_rss'] / ing['rss']:.1f}x less"]
            rows.append(line)
        if "export" in only:
            log(f"[{n}] export (training-collector) x{a.repeat} ...")
            exports = sorted((bench_export(a.bin, ing) for _ in range(a.repeat)), key=lambda x: x["secs"])
            ex = r["export"] = exports[len(exports) // 2]  # the median run
            r["export_all_secs"] = [round(x["secs"], 3) for x in exports]
            log(f"[{n}] export runs: {r['export_all_secs']} s")
            export_rows(rows, f"export {n:,}: first export", f"time (median of {a.repeat})", ex, seed)
            log(f"[{n}] export again, prepared cache read (training-collector) x{a.repeat} ...")
            again = sorted((bench_export(a.bin, ing, cached=True) for _ in range(a.repeat)), key=lambda x: x["secs"])
            cx = r["export_cached"] = again[len(again) // 2]
            r["export_cached_all_secs"] = [round(x["secs"], 3) for x in again]
            log(f"[{n}] export runs, prepared cache read: {r['export_cached_all_secs']} s")
            if cx["report"].get("after_filtering") != ex["report"].get("after_filtering") or \
                    cx["report"].get("output_sha256") != ex["report"].get("output_sha256"):
                raise SystemExit("the export with the prepared cache wrote other bytes")
            stats = cx["report"].get("prepared_cache", {})
            export_rows(rows, f"export {n:,}: again",
                        f"prepared cache read ({stats.get('reused', 0)} segments), time", cx, seed)
            log(f"[{n}] the daemon prepares the sealed segments ahead, then export x{a.repeat} ...")
            pairs = []
            for _ in range(a.repeat):
                pa = bench_prepare_ahead(a.bin, ing)
                pairs.append((bench_export(a.bin, ing, cached=True), pa))
            pairs.sort(key=lambda x: x[0]["secs"])
            ax, pa = pairs[len(pairs) // 2]
            r["export_prepared_ahead"], r["prepare_ahead"] = ax, pa
            r["export_prepared_ahead_all_secs"] = [round(x[0]["secs"], 3) for x in pairs]
            log(f"[{n}] export runs after the daemon prepared ahead: {r['export_prepared_ahead_all_secs']} s")
            stats = ax["report"].get("prepared_cache", {})
            if stats.get("written") != 0 or stats.get("reused") != pa["segments"] or \
                    ax["report"].get("output_sha256") != ex["report"].get("output_sha256"):
                raise SystemExit(f"the export after the daemon prepared ahead: {stats}, other bytes?")
            export_rows(rows, f"export {n:,}: prepared ahead by the daemon",
                        f"all {pa['segments']} segments read from the cache, time", ax, seed)
            rows.append([f"daemon {n:,}: preparing {pa['segments']} segments ahead (nice 19)",
                         f"{pa['secs']:.2f} s after start, CPU {pa['cpu']:.2f} s", "", ""])
            rep = ex["report"]
            line = [f"export {n:,}: examples out", str(rep.get("after_filtering", "?"))]
            if seed:
                line += [str(seed.get("after_filtering")), ""]
            rows.append(line)
            log(f"[{n}] export, near duplicates off (training-collector) x{a.repeat} ...")
            cfg = no_near_dup_config(ing)
            plain = sorted((bench_export(a.bin, ing, cfg) for _ in range(a.repeat)), key=lambda x: x["secs"])
            px = r["export_no_near_dup"] = plain[len(plain) // 2]
            r["export_no_near_dup_all_secs"] = [round(x["secs"], 3) for x in plain]
            log(f"[{n}] export runs, near duplicates off: {r['export_no_near_dup_all_secs']} s")
            line = [f"export {n:,}, near dups off (the seed's work), first export: time",
                    f"{px['secs']:.3f} s ({px['report'].get('after_filtering', '?')} out)"]
            if seed:
                line += [f"{seed['export_s']:.3f} s", f"{seed['export_s'] / px['secs']:.1f}x"]
            rows.append(line)
        if n == sizes[0] and "idle" in only:
            log(f"idle CPU over {a.idle_seconds:g} s ...")
            idle = results["idle"] = bench_idle(a.bin, ing, a.idle_seconds)
            cpu_ms = idle["cpu_ns"] / 1e6
            rows.append([f"idle CPU over {idle['secs']:.0f} s",
                         f"{cpu_ms:.2f} ms ({100 * cpu_ms / 1000 / idle['secs']:.3f}%), {idle['switches']} ctx sw", "", ""])
        if n == sizes[0] and "latency" in only:
            log(f"latency at 1,000 lines/s for {a.latency_seconds:g} s ...")
            lat = results["latency"] = bench_latency(a.bin, work, logp, a.latency_seconds)
            for key, label in (("buffered", "append -> buffered"), ("written", "append -> in open segment"),
                               ("durable", "append -> fsynced+checkpointed")):
                v = lat[key]
                if v:
                    rows.append([f"latency {label} p50 / p99",
                                 f"{v['p50'] * 1e3:.1f} / {v['p99'] * 1e3:.1f} ms", "", f"n={v['n']}"])
            rows.append(["latency: achieved append rate", f"{lat['rate']:.0f} lines/s", "", ""])
        if n == sizes[0] and "manyfiles" in only:
            log(f"{a.many_files:,} matching files: idle, then 1,000 lines/s into 10 of them ...")
            many = results["many_files"] = bench_many_files(a.bin, work, a.many_files, a.idle_seconds)
            for key, label in (("idle", "idle"), ("writing", "1,000 lines/s into 10")):
                v = many[key]
                cpu_ms = v["cpu_ns"] / 1e6
                rows.append([f"{a.many_files:,} files, {label}: CPU over {v['secs']:.0f} s",
                             f"{cpu_ms:.0f} ms ({100 * cpu_ms / 1000 / v['secs']:.1f}% of a core)", "",
                             f"{v['full_polls']} full / {v['light_polls']} light polls"])
    m = results["machine"] = machine()
    print(f"machine: {m['cpu']}, {m['cores']} cores, {' '.join(m['simd']) or 'no AVX2/AVX-512'}")
    head = ["measure", "training-collector", "seed", "ratio"]
    widths = [max(len(str(r[i])) if i < len(r) else 0 for r in rows + [head]) for i in range(4)]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(head, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        r = r + [""] * (4 - len(r))
        print("| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1, default=str)


if __name__ == "__main__":
    main()
