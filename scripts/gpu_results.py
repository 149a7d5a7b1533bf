#!/usr/bin/env python3
"""Collects what scripts/gpu_check.sh wrote into DIR: writes DIR/gpu-results.jsonl and prints
the results table. Standard library only (it runs on the GPU machine).

gpu-results.jsonl holds one JSON line per
  - size and precision ("kind": "speed"): our median ms per evaluation and peak memory, and
    PyTorch's fastest configuration of the same precision in the same run, with the ratio;
  - parity op and precision ("kind": "parity"): worst max |gpu - cpu| and relative error
    (max |gpu - cpu| / max |cpu|) over the test's cases, against the tolerance;
  - end-to-end run ("kind": "e2e"): the final objective on the GPU vs the CPU after the same
    iterations.
Exits 1 when a parity check failed or a step left no results.

Usage: scripts/gpu_results.py DIR
"""
import datetime
import glob
import json
import os
import sys

# PyTorch configurations (torch_gatys.py) by the precision of their convolutions.
TORCH_CONFIGS = {
    "fp32": ["lbfgs-fp32"],
    "tf32": ["lbfgs-tf32", "adam-tf32", "lbfgs-tf32-cl", "lbfgs-tf32-compiled"],
    "bf16": ["lbfgs-bf16-cl", "adam-bf16-cl", "lbfgs-bf16-cl-compiled"],
}
# End to end: how far the GPU's final objective may be from the CPU's (relative).
E2E_TOL = {"fp32": 0.01, "tf32": 0.01, "bf16": 0.03}
GIB = float(1 << 30)


def json_lines(path, prefix=""):
    if not os.path.exists(path):
        return []
    out = []
    with open(path, errors="replace") as f:
        for line in f:
            line = line.strip()
            if prefix:
                if not line.startswith(prefix):
                    continue
                line = line[len(prefix):]
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    pass
    return out


def parity(d):
    worst = {}
    for r in json_lines(os.path.join(d, "parity.log"), "parity "):
        key = (r["op"], r["precision"])
        w = worst.setdefault(key, dict(kind="parity", op=r["op"], precision=r["precision"], checks=0,
                                       max_abs=0.0, rel=0.0, tol=r["tol"], worst_case="", passed=True))
        w["checks"] += 1
        rel = r["rel"] if r["rel"] is not None else float("inf")
        if r["max_abs"] is not None:
            w["max_abs"] = max(w["max_abs"], r["max_abs"])
        # The case closest to its tolerance is the one reported.
        if rel / max(r["tol"], 1e-300) >= w["rel"] / max(w["tol"], 1e-300):
            w["rel"], w["tol"], w["worst_case"] = rel, r["tol"], r["case"]
        w["passed"] = w["passed"] and bool(r["pass"])
    return list(worst.values())


def summary(path):
    rows = json_lines(path)
    return rows[-1] if rows and rows[-1].get("summary") else None


def e2e(d):
    cpu = summary(os.path.join(d, "e2e_cpu.jsonl"))
    out = []
    for path in sorted(glob.glob(os.path.join(d, "e2e_*.jsonl"))):
        name = os.path.basename(path)[4:-6]
        if name == "cpu":
            continue
        s = summary(path)
        # The optimiser's float loss (older logs have only "final", which was that loss then).
        def total(x):
            return (x.get("final_optimizer") or x["final"])["total"]
        r = dict(kind="e2e", precision=name, gpu_total=s and total(s),
                 cpu_total=cpu and total(cpu), evaluations=s and s["evaluations"],
                 size=s and [s["width"], s["height"]])
        if s and cpu:
            r["rel_diff"] = abs(total(s) - total(cpu)) / abs(total(cpu))
            r["tol"] = E2E_TOL.get(name, 0.01)
            r["within"] = r["rel_diff"] <= r["tol"]
        out.append(r)
    return out


def speed(d):
    torch = [r for r in json_lines(os.path.join(d, "torch.log")) if "ms_per_eval" in r]
    out = []
    for path in sorted(glob.glob(os.path.join(d, "bench_*.jsonl"))):
        precision = os.path.basename(path)[6:-6]
        for b in json_lines(path):
            size = b["size"]
            same = [t for t in torch if t["size"] == size and t.get("config") in TORCH_CONFIGS.get(precision, [])]
            best = min(same, key=lambda t: t["ms_per_eval"]) if same else None
            lbfgs = [t for t in same if t["config"].startswith("lbfgs")]
            r = dict(kind="speed", size=size, precision=precision, ours_backend=b["backend"],
                     ours_ms=b["median_ms"], ours_min_ms=b["min_ms"], ours_evals=b["evals"],
                     ours_gflops=b["gflops_effective"],
                     ours_peak_gib=None if b.get("peak_bytes") is None else round(b["peak_bytes"] / GIB, 3),
                     torch_best_config=best and best["config"], torch_ms=best and best["ms_per_eval"],
                     torch_peak_gib=best and best.get("peak_mem_gib"),
                     torch_lbfgs_ms=min((t["ms_per_eval"] for t in lbfgs), default=None))
            if best:
                r["ratio"] = round(b["median_ms"] / best["ms_per_eval"], 3)
            out.append(r)
    return out


def fmt(v, spec):
    """v in format spec, or a dash as wide as the spec's field."""
    return format(v, spec) if v is not None else format("-", ">" + spec.split(".")[0])


def main():
    d = sys.argv[1] if len(sys.argv) > 1 else "target/gpu_check"
    dev = open(os.path.join(d, "device.txt")).read().strip().splitlines() if os.path.exists(os.path.join(d, "device.txt")) else []
    head = dict(kind="device", date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                gpu=dev[0] if dev else None, binary=" ".join(dev[1:]))
    par, ends, spd = parity(d), e2e(d), speed(d)
    with open(os.path.join(d, "gpu-results.jsonl"), "w") as f:
        for r in [head] + spd + par + ends:
            # Strict JSON: an infinite or NaN error is written as null.
            clean = {k: (None if isinstance(v, float) and v != v or v in (float("inf"), float("-inf")) else v) for k, v in r.items()}
            f.write(json.dumps(clean) + "\n")

    print(f"{head['date']}  {head['gpu']}")
    print(head["binary"])
    print("\nspeed (ms per loss-and-gradient evaluation, median; PyTorch: its fastest config of the same precision)")
    print(f"{'size':>5} {'prec':<5} {'ours ms':>8} {'torch ms':>9} {'ours/torch':>10}  {'torch config':<16} {'ours GiB':>8} {'torch GiB':>9}")
    for r in spd:
        print(f"{r['size']:>5} {r['precision']:<5} {fmt(r['ours_ms'], '8.2f')} {fmt(r['torch_ms'], '9.2f')} "
              f"{fmt(r.get('ratio'), '10.3f')}  {r['torch_best_config'] or '-':<16} {fmt(r['ours_peak_gib'], '8.2f')} "
              f"{fmt(r['torch_peak_gib'], '9.2f')}")
    print("\nparity vs the CPU (worst case per op; rel = max|gpu-cpu| / max|cpu|)")
    print(f"{'op':<28} {'prec':<5} {'n':>3} {'max abs':>9} {'rel':>9} {'tol':>7}  ok")
    for r in sorted(par, key=lambda r: (r["op"], r["precision"])):
        print(f"{r['op']:<28} {r['precision']:<5} {r['checks']:>3} {fmt(r['max_abs'], '9.2e')} {fmt(r['rel'], '9.2e')} "
              f"{r['tol']:>7.0e}  {'yes' if r['passed'] else 'NO'}")
    print("\nend to end (final objective after the same iterations, GPU vs CPU)")
    for r in ends:
        print(f"  {r['precision']:<5} gpu {fmt(r['gpu_total'], '.6g')}  cpu {fmt(r['cpu_total'], '.6g')}  "
              f"diff {fmt(r.get('rel_diff'), '.2e')}  {'within' if r.get('within') else 'OUTSIDE'} {fmt(r.get('tol'), '.0e')}")
    missing = [name for name, rows in (("speed", spd), ("parity", par)) if not rows]
    if missing:
        print(f"\nno results for: {', '.join(missing)}")
    failed = [r for r in par if not r["passed"]]
    if failed:
        print(f"\nFAILED parity: {', '.join(r['op'] + ' ' + r['precision'] for r in failed)}")
    return 1 if failed or missing else 0


if __name__ == "__main__":
    sys.exit(main())
