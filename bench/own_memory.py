#!/usr/bin/env python3
"""leakscope's own memory on a small service: runs one command (the
service drives its own load and exits), reads its RSS from /proc every
10 ms, and the RSS of any child it forks meanwhile (the periodic writer's
child), and prints one JSON line: peak and mean RSS of the service, its
high-water mark (VmHWM), and the largest child seen.

Usage: own_memory.py NAME COMMAND... (settings come from the environment).
"""
import json
import os
import subprocess
import sys
import time


def status_kb(pid, field):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def children(pid):
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out.extend(int(c) for c in f.read().split())
    except OSError:
        pass
    return out


def main():
    name, cmd = sys.argv[1], sys.argv[2:]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    samples, child_peak, hwm = [], 0, 0
    while proc.poll() is None:
        rss = status_kb(proc.pid, "VmRSS")
        peak = status_kb(proc.pid, "VmHWM")
        if rss is not None:
            samples.append(rss)
        if peak is not None:
            hwm = max(hwm, peak)
        for c in children(proc.pid):
            child_peak = max(child_peak, status_kb(c, "VmRSS") or 0)
        time.sleep(0.01)
    # The first second is start-up (the runtime, the first connections).
    steady = samples[len(samples) // 10:] or samples
    print(json.dumps({
        "name": name,
        "status": proc.returncode,
        "rss_mean_kb": round(sum(steady) / max(len(steady), 1)),
        "rss_peak_kb": max(steady, default=0),
        "hwm_kb": hwm,
        "child_peak_kb": child_peak,
    }))


if __name__ == "__main__":
    main()
