"""Compiled code is cached per version of tsalign's sources (tsalign.jit.cache_dir).

numba keys a cached function by the content of its own file only. ``jsonl_rows_py`` (tsalign/align/jsonl.py) inlines
``put_bytes`` (tsalign/jit.py): with numba's own keys, a change to put_bytes alone left the cached JSON lines writer
in use. These tests copy the package, write JSON lines with it in a fresh process (real numba, real disk cache), change
the helper in the copy and write again: the change must show. The first test fails where the cache is numba's
in-tree one.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tsalign import jit

pytest.importorskip("numba")

PACKAGE = Path(jit.__file__).resolve().parent

#: one host row and one guest row through the compiled writer, printed as the bytes written
SNIPPET = r"""
import sys
import numpy as np, pyarrow as pa
from tsalign.align.jsonl import jsonl_lines
from tsalign.jit import cache_dir
s = lambda *x: pa.array(list(x), pa.string())
i = lambda *x: np.array(x, dtype=np.int64)
out = jsonl_lines(np.array([True, False]), np.array([12345, 99], dtype=np.uint64), np.array([7, 0], dtype=np.uint64),
                  i(1, 0), i(42, 7), i(42, 7), i(3, -1), i(0, 1), s("qemu", "sh"), i(0, 1), s("kvm_pio", "tsalign_beacon"),
                  s("port 0x10", "seq=1"), i(0, 0), s("vcpu3"))
sys.stdout.write(bytes(out).decode())
import tsalign
sys.stderr.write(tsalign.__file__ + "\n" + str(cache_dir()))
"""


def _copy(tmp: Path) -> Path:
    lib = tmp / "lib"
    shutil.copytree(PACKAGE, lib / "tsalign", ignore=shutil.ignore_patterns("__pycache__"))
    return lib


def _write(lib: Path, cache: str) -> tuple[list[dict], str]:
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env |= {"PYTHONPATH": str(lib), "XDG_CACHE_HOME": cache}
    r = subprocess.run([sys.executable, "-c", SNIPPET], capture_output=True, text=True, env=env, timeout=600,
                       cwd=lib)  # (not the checkout: `-c` imports from the working directory first)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stderr.strip().splitlines()[-2] == str(lib / "tsalign" / "__init__.py")  # (the copy ran)
    return [json.loads(line) for line in r.stdout.splitlines()], r.stderr.strip().splitlines()[-1]


def test_a_changed_helper_is_not_loaded_from_a_stale_cache(tmp_path: Path) -> None:
    lib, cache = _copy(tmp_path), str(tmp_path / "cache")
    rows, used = _write(lib, cache)
    # by hand: what json.dumps(row, sort_keys=True) gives (tsalign.align.jsonl's doc)
    assert rows == [{"comm": "qemu", "cpu": 1, "event": "kvm_pio", "guest_tsc": 12345, "host_tsc": 7, "payload": "port 0x10",
                     "pid": 42, "side": "host", "tgid": 42, "track": "vcpu3", "vcpu": 3},
                    {"comm": "sh", "cpu": 0, "event": "tsalign_beacon", "guest_tsc": 99, "payload": "seq=1", "pid": 7,
                     "side": "guest", "tgid": 7, "track": "vcpu3"}]
    assert Path(used).parent == tmp_path / "cache" / "tsalign" / "numba" and list(Path(used).rglob("*.nbi"))
    # the helper alone changes (its callers' files do not): every copied byte 'q' is written as 'Q'
    helper = lib / "tsalign" / "jit.py"
    text = helper.read_text()
    assert "        out[pos] = src[j]\n" in text
    helper.write_text(text.replace("        out[pos] = src[j]\n", "        out[pos] = src[j] if src[j] != 113 else 81\n"))
    rows2, used2 = _write(lib, cache)
    assert rows2[0]["comm"] == "Qemu" and rows2[1]["comm"] == "sh", rows2
    assert used2 != used and Path(used2).is_dir() and Path(used).is_dir()


def test_without_a_writable_cache_directory_nothing_is_cached(tmp_path: Path) -> None:
    lib = _copy(tmp_path)
    rows, used = _write(lib, "/proc/tsalign-no-such-dir")  # (not even root can make a directory there)
    assert used == "None" and rows[0]["event"] == "kvm_pio"
    assert not list(lib.rglob("*.nbi"))  # nor beside the sources (numba's own place)


def test_caches_of_other_versions_are_pruned(tmp_path: Path) -> None:
    base, now = tmp_path / "numba", time.time()
    olds = []
    for k in range(5):
        d = base / f"{k:016x}"
        d.mkdir(parents=True)
        os.utime(d, (now - 1000 * (k + 1), now - 1000 * (k + 1)))
        olds.append(d)
    (base / "not-a-cache").mkdir()
    current = base / ("f" * 16)
    current.mkdir()
    jit._prune(base, current)
    kept = sorted(p.name for p in base.iterdir())
    # the current one, the three used last of the others, and what is not a cache of ours
    assert kept == sorted([current.name, *(d.name for d in olds[:jit.KEEP_OTHER_CACHES]), "not-a-cache"])


def test_the_digest_follows_the_sources(tmp_path: Path) -> None:
    lib = _copy(tmp_path) / "tsalign"
    a = jit.source_digest(lib)
    assert a == jit.source_digest(PACKAGE)
    (lib / "__pycache__").mkdir(exist_ok=True)
    (lib / "__pycache__" / "x.py").write_text("ignored")  # (compiled leftovers are not sources)
    assert jit.source_digest(lib) == a
    (lib / "traces" / "digits.py").write_text((lib / "traces" / "digits.py").read_text() + "\n")
    assert jit.source_digest(lib) != a
