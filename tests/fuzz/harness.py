"""Seeded mutation fuzzing of every tsalign reader, with per-case time and memory limits.

Seeds are real inputs: traces recorded on this machine (trace-cmd .dat v6, v7 zstd, v7 uncompressed;
tracefs text with and without irq-info; ``trace-cmd report``; ``perf script`` default/--ns/times), the
shipped selftest bundles (manifest and data mutated separately, read by ``events`` and ``align``) and
a split BTF (kvm.ko of the VM kernel, on its vmlinux base). Each case is one mutation of one seed
(bit flips, interesting 8/16/32/64-bit values at random offsets, truncation, slices deleted, duplicated
or inserted; for text: lines duplicated, over-long numbers, NUL runs, non-UTF-8 bytes; for manifests:
values replaced by other JSON types and extremes), run through the CLI's own entry point
(``tsalign.cli.main``) in a forked child (imports and numba compilation are done once, in the parent)
with RLIMIT_AS = what the parent maps + ``--mem-mb`` and a wall-clock limit.

A case is **ok** when the command returns a documented exit code (0, 1, 3, 4, 5, 6, 7) with no
traceback; a **traceback** is any other exception (exit 70 from main, or one that escapes it); a
**hang** is a case over the time limit; **memory** is a MemoryError (or main's "out of memory" error, exit 4)
or a child killed by the limit;
a **signal** is a child killed by one (segfault in compiled code). Findings are written under
``OUT/corpus`` as ``<result>-<seed>-<n>/`` with the inputs and ``finding.json`` (result, exit code, traceback);
rerun one with the command the seed's kind runs (``tsalign events FILE``, ``align``, ``btf offsetof``).

    python -m tests.fuzz.harness --seconds 120 --out /tmp/fuzz      # what `make fuzz` runs (longer)
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import re
import resource
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from tsalign.cli import OUT_OF_MEMORY

REPO = Path(__file__).resolve().parents[2]
OK_CODES = {0, 1, 3, 4, 5, 6, 7}
INTERESTING = [0, 1, 2, 0x7F, 0x80, 0xFF, 0x100, 0xFFFF, 0x7FFF_FFFF, 0x8000_0000, 0xFFFF_FFFF, 1 << 32,
               0x7FFF_FFFF_FFFF_FFFF, 0xFFFF_FFFF_FFFF_FFFF, 4096, 4095, 8192, 1 << 20, 1 << 30]


@dataclass
class Seed:
    """A real input: ``kind`` picks how it is run and mutated; ``files`` are its files (name -> bytes)."""

    name: str
    kind: str  # dat | text | bundle | btf
    files: dict[str, bytes]
    extra: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------- mutations (pure)

def mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    """One to four binary mutations of ``data``."""
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(7)
        n = len(b)
        if n == 0:
            b += rng.randbytes(rng.randint(1, 64))
            continue
        at = rng.randrange(n)
        if op == 0:
            for _ in range(rng.randint(1, 8)):
                i = rng.randrange(n)
                b[i] ^= 1 << rng.randrange(8)
        elif op == 1:
            width = rng.choice((1, 2, 4, 8))
            v = rng.choice(INTERESTING) & ((1 << (8 * width)) - 1)
            b[at:at + width] = v.to_bytes(width, rng.choice(("little", "big")))[:max(0, n - at)]
        elif op == 2:
            del b[rng.randrange(n):]
        elif op == 3:
            end = min(n, at + rng.randint(1, 4096))
            del b[at:end]
        elif op == 4:
            end = min(n, at + rng.randint(1, 4096))
            b[at:at] = b[at:end]
        elif op == 5:
            b[at:at] = rng.randbytes(rng.randint(1, 256))
        else:
            # an aligned 32/64-bit field near a header: where sizes and offsets live
            at = rng.randrange(min(n, 16384)) & ~7
            width = rng.choice((4, 8))
            v = rng.choice(INTERESTING + [n, n + 1, n * 2, at]) & ((1 << (8 * width)) - 1)
            b[at:at + width] = struct.pack("<I" if width == 4 else "<Q", v)[:max(0, n - at)]
    return bytes(b)


def mutate_text(data: bytes, rng: random.Random) -> bytes:
    """Line-level mutations of a text trace, or a binary one now and then."""
    lines = data.split(b"\n")
    for _ in range(rng.randint(1, 3)):
        i = rng.randrange(len(lines))
        op = rng.randrange(8)
        if op == 0:
            lines.insert(i, lines[rng.randrange(len(lines))])
        elif op == 7:  # a number made longer in place: pids, CPUs, timestamps past their types' ranges
            digits = [m.start() for m in re.finditer(rb"\d", lines[i])]
            if digits:
                at = rng.choice(digits)
                lines[i] = lines[i][:at] + b"9" * rng.choice((5, 10, 11, 20, 21, 4400)) + lines[i][at:]
        elif op == 1:
            lines[i] = b"\x00" * rng.randint(1, 5000) + lines[i]
        elif op == 2:
            lines[i] = lines[i].replace(b" ", b" " + b"9" * rng.randint(20, 5000), 1)
        elif op == 3:
            lines[i] = lines[i] + b"\xff\xfe\xc3(" * rng.randint(1, 4)
        elif op == 4:
            lines[i] = lines[i][: rng.randrange(len(lines[i]) + 1)]
        elif op == 5:
            lines[i] = lines[i].replace(b"0", "\u0663".encode(), 1)  # an Arabic-Indic digit
        else:
            del lines[i]
    out = b"\n".join(lines)
    return mutate_bytes(out, rng) if rng.random() < 0.25 else out


def _json_values(rng: random.Random) -> Any:
    return rng.choice([None, True, -1, 0, 1 << 64, -(1 << 70), 1.5, float("1e308"), "", "x" * 5000, "../../etc/passwd",
                       "/dev/zero", [], {}, [1, 2], {"a": 1}, "4077016847662", 10**30])


def mutate_manifest(data: bytes, rng: random.Random) -> bytes:
    """Replace one to three values anywhere in a JSON manifest, or mutate its bytes."""
    if rng.random() < 0.2:
        return mutate_bytes(data, rng)
    doc = json.loads(data)
    for _ in range(rng.randint(1, 3)):
        path: list[Any] = []
        cur = doc
        while isinstance(cur, (dict, list)) and cur and rng.random() < 0.8:
            key = rng.choice(list(cur)) if isinstance(cur, dict) else rng.randrange(len(cur))
            path.append(key)
            cur = cur[key]
        if not path:
            continue
        parent = doc
        for k in path[:-1]:
            parent = parent[k]
        parent[path[-1]] = _json_values(rng)
    return json.dumps(doc).encode()


def mutate(seed: Seed, rng: random.Random) -> dict[str, bytes]:
    """The files of one case: ``seed``'s with one of them mutated."""
    files = dict(seed.files)
    if seed.kind == "bundle":
        name = rng.choice(sorted(files))
        fn = mutate_manifest if name.endswith("manifest.json") else mutate_text
    else:
        name = seed.extra.get("mutate", next(iter(files)))
        fn = mutate_text if seed.kind == "text" else mutate_manifest if name.endswith(".json") else mutate_bytes
    files[name] = fn(files[name], rng)
    return files


# ---------------------------------------------------------------------------- running one case

def _argv(seed: Seed, d: Path) -> list[str]:
    main = d / next(iter(seed.files))
    if seed.kind in ("dat", "text"):
        return ["events", str(main), "--json", *seed.extra.get("args", [])]
    if seed.kind == "bundle":
        return ["align", "--host", str(d / "host"), "--guest", str(d / "guest"), "-o", str(d / "out"), "--json"]
    if seed.kind == "aligndat":  # a .dat host printed by libtraceevent (tsalign.traces.printfmt), a text guest
        return ["align", "--host", str(main), "--guest", str(d / "guest.txt"), "--vcpu-tid", "0=1", "--tsc-offset", "0",
                "-o", str(d / "out"), "--json"]
    if seed.kind == "calibration":  # tsalign calibrate's file (tsalign.clock.calib), read by convert
        return ["convert", "--from", "guest-sched", "--to", "guest-tsc", "--calibration", str(main), "--json",
                *seed.extra["args"]]
    if seed.kind == "kernels":  # precheck reports read by the controller's kernel table (tsalign.kernel.fleet)
        return ["kernels", str(main.parent), "--cache", "none", "--json"]
    if seed.kind == "dwarf":  # a gcc-compiled relocatable object (tsalign.kernel.dwarf)
        return ["offsetof", "outer", "e.in.value", "wide", "--debuginfo", str(main), "--cache", "none", "--json"]
    return ["btf", "offsetof", "--btf", str(d / "kvm.btf"), "--btf-base", str(d / "vmlinux.btf"), "--json",
            "kvm_vcpu_arch", "tsc_offset"]


def _child(argv: list[str], mem_bytes: int, report: int) -> None:
    """In the forked child: limit memory, run the CLI, report the outcome on fd ``report``; never returns."""
    resource.setrlimit(resource.RLIMIT_AS, (mem_bytes, mem_bytes))
    os.environ["TSALIGN_REAP"] = "0"  # thousands of CLI runs must not reap another test's instances
    from tsalign.cli import main

    outcome: dict[str, Any]
    try:
        with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.redirect_stderr(io.StringIO()) as err:
            code = main(argv)
        tb = err.getvalue() if "Traceback" in err.getvalue() else ""
        outcome = {"code": code, "stderr": err.getvalue()[-2000:], "traceback": tb, "stdout_bytes": len(out.getvalue())}
    except MemoryError:
        outcome = {"code": "memory", "traceback": traceback.format_exc()[-4000:]}
    except BaseException:  # noqa: BLE001 - anything escaping main is a finding
        outcome = {"code": 70, "traceback": traceback.format_exc()[-4000:]}
    os.write(report, json.dumps(outcome).encode()[:60000])
    os._exit(0)


def run_case(seed: Seed, files: dict[str, bytes], work: Path, timeout: float, mem_mb: int) -> dict[str, Any]:
    """Write ``files`` under a fresh directory of ``work``, run the seed's command on them in a forked child."""
    d = Path(tempfile.mkdtemp(dir=work))
    try:
        for name, data in files.items():
            (d / name).parent.mkdir(parents=True, exist_ok=True)
            (d / name).write_bytes(data)
        rfd, wfd = os.pipe()
        base = _vm_bytes()
        pid = os.fork()
        if pid == 0:
            os.close(rfd)
            try:
                _child(_argv(seed, d), base + (mem_mb << 20), wfd)
            finally:
                os._exit(99)
        os.close(wfd)
        t0 = time.monotonic()
        status = None
        while time.monotonic() - t0 < timeout:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            time.sleep(0.005)
        else:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            os.close(rfd)
            return {"result": "hang", "seconds": timeout}
        raw = b""
        while chunk := os.read(rfd, 65536):
            raw += chunk
        os.close(rfd)
        took = time.monotonic() - t0
        if os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            return {"result": "memory" if sig == signal.SIGKILL else "signal", "signal": sig, "seconds": took}
        if not raw:
            return {"result": "signal", "detail": f"child exited {os.WEXITSTATUS(status)} without a report", "seconds": took}
        out = json.loads(raw)
        out["seconds"] = took
        if out["code"] == "memory" or OUT_OF_MEMORY in out.get("stderr", ""):  # (main's error for a MemoryError)
            out["result"] = "memory"
        elif out["code"] not in OK_CODES or out.get("traceback"):
            out["result"] = "traceback"
        else:
            out["result"] = "ok"
        return out
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _vm_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


# ---------------------------------------------------------------------------- seeds

def seeds(d: Path) -> list[Seed]:
    """Record and collect the seeds into ``d`` (needs root, tracefs, trace-cmd, perf; see tests/infra/recorded)."""
    from tests.infra import recorded

    rec = recorded.record(d)
    out = [Seed(f"dat-{k}", "dat", {f"{k}.dat": rec[k].read_bytes()}) for k in ("v7zstd", "v6", "v7none")]
    out += [Seed(f"text-{k}", "text", {f"{k}.txt": rec[k].read_bytes()}) for k in ("text", "text_noirq", "report")]
    out += [Seed(f"perf-{k}", "text", {f"{k}.txt": rec[k].read_bytes()}) for k in ("perf", "perf_ns")]
    ex = REPO / "examples" / "selftest"
    bundle = {f"{side}/{p.relative_to(ex / side)}": p.read_bytes() for side in ("host", "guest")
              for p in sorted((ex / side).rglob("*")) if p.is_file()}
    out.append(Seed("bundle-selftest", "bundle", bundle))
    guest = "".join(f"microvm-0 [000] {r['ts']}: {r['event']}: {r['payload']}\n" for r in
                    sorted((json.loads(x) for x in (ex / "guest" / "events.jsonl").open()), key=lambda r: r["ts"]))
    out.append(Seed("align-dat", "aligndat", {"host.dat": rec["v7zstd"].read_bytes(), "guest.txt": guest.encode()},
                    {"mutate": "host.dat"}))
    out.append(_calibration_seed(d))
    report = subprocess.run([sys.executable, "-m", "tsalign", "precheck", "--role", "host", "--json"], capture_output=True,
                            cwd=REPO, timeout=300).stdout
    out.append(Seed("kernels-reports", "kernels", {"reports/this-host.json": report}))
    if shutil.which("gcc"):
        from tests.unit.test_dwarf_route import C_SOURCE

        (d / "t.c").write_text(C_SOURCE)
        subprocess.run(["gcc", "-g", "-c", "-o", str(d / "t.o"), str(d / "t.c")], check=True, timeout=60)
        out.append(Seed("dwarf-obj", "dwarf", {"t.o": (d / "t.o").read_bytes()}))
    btf = sorted(Path(os.environ.get("TSALIGN_CACHE", "/var/cache/tsalign")).glob("btf-linux-image-*"))
    if btf:
        out.append(Seed("btf-kvm", "btf", {"kvm.btf": (btf[-1] / "kvm.btf").read_bytes(),
                                           "vmlinux.btf": (btf[-1] / "vmlinux.btf").read_bytes()},
                        {"mutate": "kvm.btf"}))
    return out


def _calibration_seed(d: Path) -> Seed:
    """A calibration file fitted on pairs of a pvclock record made by hand (what tsalign calibrate writes)."""
    from tsalign.clock import calib, pvclock

    pv = pvclock.Pvclock(5_000_000_000, 10_000_000_000, 3_512_649_356, -1)
    tscs = [10_000_000_000 + i * 2_000_000 for i in range(200)]
    ns = [pvclock.tsc_to_kvmclock(t, pv) for t in tscs]
    cal = calib.fit(ns, [t - 500 for t in tscs], [t + 500 for t in tscs], "local", 2_445_428)
    calib.save(str(d / "cal.json"), [cal])
    return Seed("calibration", "calibration", {"cal.json": (d / "cal.json").read_bytes()}, {"args": [str(ns[100])]})


def warm(seed_list: list[Seed], work: Path) -> None:
    """Run every seed once, unmutated, in this process: imports and numba compilation happen before the forks;
    a seed that does not pass is a broken harness, not a finding."""
    from tsalign.cli import main

    for s in seed_list:
        d = Path(tempfile.mkdtemp(dir=work))
        for name, data in s.files.items():
            (d / name).parent.mkdir(parents=True, exist_ok=True)
            (d / name).write_bytes(data)
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
            code = main(_argv(s, d))
        shutil.rmtree(d, ignore_errors=True)
        if code not in ((0, 6, 7) if s.kind == "aligndat" else (0, 6)):
            raise RuntimeError(f"seed {s.name} does not pass unmutated (exit {code}): {err.getvalue()[-1000:]}")


# ---------------------------------------------------------------------------- campaign

def campaign(seed_list: list[Seed], seconds: float, rng_seed: int, out: Path, timeout: float, mem_mb: int,
             progress: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Round-robin over the seeds until ``seconds`` pass; returns the figures; findings go to ``out``/corpus."""
    work = out / "work"
    corpus = out / "corpus"
    work.mkdir(parents=True, exist_ok=True)
    corpus.mkdir(parents=True, exist_ok=True)
    warm(seed_list, work)
    rng = random.Random(rng_seed)
    per: dict[str, Counter[str]] = {s.name: Counter() for s in seed_list}
    peak: dict[str, float] = {s.name: 0.0 for s in seed_list}
    t_end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < t_end:
        s = seed_list[n % len(seed_list)]
        case_rng = random.Random(rng.getrandbits(64))
        files = mutate(s, case_rng)
        r = run_case(s, files, work, timeout, mem_mb)
        per[s.name][r["result"]] += 1
        peak[s.name] = max(peak[s.name], r.get("seconds", 0))
        if r["result"] != "ok":
            case = corpus / f"{r['result']}-{s.name}-{n}"
            for name, data in files.items():
                (case / name).parent.mkdir(parents=True, exist_ok=True)
                (case / name).write_bytes(data)
            (case / "finding.json").write_text(json.dumps({"seed": s.name, "kind": s.kind, "extra": s.extra, **r}, indent=1))
            progress(f"{r['result']}: {case}\n{r.get('traceback', '')[-800:]}")
        n += 1
    shutil.rmtree(work, ignore_errors=True)
    totals: Counter[str] = Counter()
    for c in per.values():
        totals.update(c)
    return {"cases": n, "seconds": seconds, "rng_seed": rng_seed, "time_limit_s": timeout, "mem_limit_mb": mem_mb,
            "totals": dict(totals), "per_seed": {k: dict(v) for k, v in per.items()},
            "slowest_case_s": {k: round(v, 3) for k, v in peak.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=120)
    ap.add_argument("--out", type=Path, default=Path("out/fuzz"))
    ap.add_argument("--seed", type=int, default=20261201)
    ap.add_argument("--timeout", type=float, default=20, help="per case, seconds")
    ap.add_argument("--mem-mb", type=int, default=1024, help="per case, above what the harness maps")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "seeds").mkdir(parents=True, exist_ok=True)
    seed_list = seeds(a.out / "seeds")
    figures = campaign(seed_list, a.seconds, a.seed, a.out, a.timeout, a.mem_mb, lambda s: print(s, flush=True))
    (a.out / "figures.json").write_text(json.dumps(figures, indent=1))
    print(json.dumps(figures, indent=1))
    sys.exit(0 if set(figures["totals"]) <= {"ok"} else 1)


if __name__ == "__main__":
    main()
