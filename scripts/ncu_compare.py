#!/usr/bin/env python3
"""Sets ncu's measurements of `bench --counters` on a GPU beside the emulated device's counts of
the same launches (scripts/gpu-check.sh ncu): DRAM bytes, global sectors per request, shared
bank conflicts, registers and waves. Launches are paired in order; a kernel-name mismatch is
reported, not guessed around.

Usage: ncu_compare.py NCU.csv COUNTERS.json
"""
import csv
import json
import sys


def ncu_launches(path):
    rows = {}
    order = []
    with open(path, newline="") as f:
        lines = [l for l in f if l.startswith('"')]  # ncu prints its own notes before the CSV
    for r in csv.DictReader(lines):
        key = r["ID"]
        if key not in rows:
            rows[key] = {"kernel": r["Kernel Name"].split("(")[0].strip()}
            order.append(key)
        v = r["Metric Value"].replace(",", "")
        try:
            rows[key][r["Metric Name"]] = float(v)
        except ValueError:
            rows[key][r["Metric Name"]] = v
    return [rows[k] for k in order]


def emu_launches(path):
    doc = json.load(open(path))
    out = []
    for run in doc["runs"]:
        for row in run["counters"]:
            for l in row["launches"]:
                out.append((row["kernel"] + " " + row["shape"], l))
    return out


def main():
    ncu = ncu_launches(sys.argv[1])
    emu = emu_launches(sys.argv[2])
    print("%-34s %-44s %12s %12s %8s %8s %10s %10s %5s %5s %7s %7s" % (
        "kernel", "case", "DRAM emu", "DRAM ncu", "ld s/r", "ncu", "bank emu", "bank ncu", "regs", "ncu", "waves", "ncu"))
    for i, (case, e) in enumerate(emu):
        if i >= len(ncu):
            print("ncu has no launch %d (%s)" % (i, e["kernel"]))
            break
        n = ncu[i]
        if n["kernel"] != e["kernel"]:
            print("launch %d: the emulator ran %s, ncu saw %s: the runs differ, stopping" % (i, e["kernel"], n["kernel"]))
            break
        dram = n.get("dram__bytes_read.sum", 0) + n.get("dram__bytes_write.sum", 0)
        req = n.get("l1tex__t_requests_pipe_lsu_mem_global_op_ld.sum", 0)
        spr = n.get("l1tex__t_sectors_pipe_lsu_mem_global_op_ld.sum", 0) / req if req else 0
        espr = e["load_sectors"] / e["load_requests"] if e["load_requests"] else 0
        bank = e["shared_wavefronts"] - e["shared_ideal_wavefronts"]
        print("%-34s %-44s %12d %12d %8.2f %8.2f %10d %10d %5d %5s %7.2f %7s" % (
            e["kernel"], case[:44], e["dram_bytes"], dram, espr, spr, bank,
            n.get("l1tex__data_bank_conflicts_pipe_lsu_mem_shared.sum", 0), e["registers"],
            n.get("launch__registers_per_thread", "?"), e["waves"], n.get("launch__waves_per_multiprocessor", "?")))


if __name__ == "__main__":
    main()
