#!/usr/bin/env python3
"""Fixed-rate GET load against one URL on loopback, bounded in time and count.

Usage: api_load.py URL RATE SECONDS [CONNECTIONS]
Prints sent, errors, achieved rate and latency p50/p90/p99/max in milliseconds.
"""
import http.client
import sys
import threading
import time
from urllib.parse import urlparse

url, rate, seconds = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
conns = int(sys.argv[4]) if len(sys.argv) > 4 else 8
u = urlparse(url)
assert u.hostname in ("127.0.0.1", "localhost", "::1") or u.hostname.startswith("127."), "loopback only"
path = u.path + ("?" + u.query if u.query else "")
total = int(rate * seconds)
lat, errors, lock = [], [0], threading.Lock()
start = time.monotonic()


def worker(k):
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=5)
    # Request i is due at start + i/rate; worker k takes every conns-th request.
    for i in range(k, total, conns):
        due = start + i / rate
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
        t0 = time.monotonic()
        try:
            c.request("GET", path)
            r = c.getresponse()
            r.read()
            ok = r.status == 200
        except Exception:
            ok = False
            c.close()
            c = http.client.HTTPConnection(u.hostname, u.port, timeout=5)
        t1 = time.monotonic()
        with lock:
            if ok:
                lat.append((t1 - t0) * 1000)
            else:
                errors[0] += 1


threads = [threading.Thread(target=worker, args=(k,)) for k in range(conns)]
for t in threads:
    t.start()
for t in threads:
    t.join(timeout=seconds + 30)
elapsed = time.monotonic() - start
lat.sort()
q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] if lat else float("nan")
print(f"sent {len(lat) + errors[0]} in {elapsed:.1f}s ({(len(lat) + errors[0]) / elapsed:.0f} req/s), "
      f"errors {errors[0]}, p50 {q(0.5):.2f} ms, p90 {q(0.9):.2f} ms, p99 {q(0.99):.2f} ms, max {lat[-1] if lat else float('nan'):.2f} ms")
