#!/usr/bin/env python3
"""Times commands, sequentially (each command N times in a row, commands one after the other) or
interleaved (N iterations, each running every command once), and prints per-command statistics.

Usage: timeit.py seq|inter RUNS [--raw FILE] LABEL=COMMAND ...
       timeit.py summary FILE
--raw appends every time to FILE, one line per command: `$TIMEIT_TAG mode label times...`;
(and a second line, label `LABEL:cpu`, with the CPU times); `summary` prints, per tag (with its last word, the round, dropped), mode and label, the median of
the rounds' medians and the range of those medians.
COMMAND is split like a shell would (shlex); `{i}` in it becomes the run number (unique ids for
runc/crun). Each command's stdout and stderr go to /dev/null; a failing run is reported and
counted as an error, not timed.
"""
import os
import shlex
import statistics
import subprocess
import sys
import time


def run(argv):
    """Wall time and CPU time (user + system of the command and the descendants it waited
    for, from wait4) in ms, or None if the command failed."""
    t0 = time.perf_counter_ns()
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, ru = os.wait4(p.pid, 0)
    ms = (time.perf_counter_ns() - t0) / 1e6
    p.returncode = os.waitstatus_to_exitcode(status)
    return (ms, (ru.ru_utime + ru.ru_stime) * 1e3) if p.returncode == 0 else None


def summary(path):
    rounds = {}
    for line in open(path):
        tag, mode, label, *times = line.split()
        key = (tag.rsplit("/", 1)[0], mode, label)
        if times:
            rounds.setdefault(key, []).append(statistics.median(float(t) for t in times))
    width = max(len(" ".join(k)) for k in rounds)
    for key, meds in rounds.items():
        print(
            f"{' '.join(key):<{width}}  median of {len(meds)} round medians {statistics.median(meds):6.1f} ms"
            f"  (rounds {min(meds):.1f} .. {max(meds):.1f})"
        )


def main():
    args = sys.argv[1:]
    if len(args) == 2 and args[0] == "summary":
        return summary(args[1])
    if len(args) < 3 or args[0] not in ("seq", "inter"):
        sys.exit(__doc__)
    mode, runs, args = args[0], int(args[1]), args[2:]
    raw = None
    if args[0] == "--raw":
        raw, args = args[1], args[2:]
    cmds = []
    for a in args:
        label, _, cmd = a.partition("=")
        cmds.append((label, shlex.split(cmd)))
    times = {label: [] for label, _ in cmds}
    cpu = {label: [] for label, _ in cmds}
    errors = {label: 0 for label, _ in cmds}

    def one(label, argv, i):
        r = run([x.replace("{i}", str(i)) for x in argv])
        if r is None:
            errors[label] += 1
        else:
            times[label].append(r[0])
            cpu[label].append(r[1])

    if mode == "seq":
        for label, argv in cmds:
            for i in range(runs):
                one(label, argv, i)
    else:
        for i in range(runs):
            for label, argv in cmds:
                one(label, argv, i)
    width = max(len(label) for label, _ in cmds)
    for label, _ in cmds:
        t = times[label]
        if not t:
            print(f"{label:<{width}}  no successful run ({errors[label]} errors)")
            continue
        k = min(5, len(t))
        print(
            f"{label:<{width}}  median {statistics.median(t):6.1f} ms  min {min(t):6.1f}"
            f"  first{k} {statistics.median(t[:k]):6.1f}  last{k} {statistics.median(t[-k:]):6.1f}"
            f"  cpu {statistics.median(cpu[label]):5.1f}"
            f"  n={len(t)}" + (f"  ERRORS={errors[label]}" if errors[label] else "")
        )
    if raw:
        with open(raw, "a") as f:
            for label, _ in cmds:
                tag = os.environ.get("TIMEIT_TAG", "-")
                f.write(f"{tag} {mode} {label} " + " ".join(f"{x:.3f}" for x in times[label]) + "\n")
                f.write(f"{tag} {mode} {label}:cpu " + " ".join(f"{x:.3f}" for x in cpu[label]) + "\n")


if __name__ == "__main__":
    main()
