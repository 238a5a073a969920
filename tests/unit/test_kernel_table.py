"""A fleet's per-build offset table (``tsalign kernels``) from real precheck reports:

- this machine (BTF; its build resolved from the node's own offsets);
- a host running Debian's 6.1.0-57-cloud-amd64 kernel without BTF, given as a tree (``precheck --root``)
  that holds that kernel's real kvm module build-id note (copied from its -dbg debug file, which shares
  the module's build id) and a minimal kallsyms: the controller resolves it from the real debug file,
  checked against pahole; without the debug file it is unresolved and the table names the package;
- hostile edits: two nodes of one build that disagree (exit 5), a report that is not one (exit 3).
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import need
from tests.infra import pahole

CACHE = os.environ.get("TSALIGN_CACHE", "/var/cache/tsalign")
REL = "6.1.0-57-cloud-amd64"


def _tsalign(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "tsalign", *args], capture_output=True, text=True, timeout=300, env=env)
    assert "Traceback" not in r.stderr, r.stderr
    return r


def _debian_host(tmp_path: Path, ko: str) -> Path:
    """The tree of a KVM host running the Debian kernel whose kvm.ko debug file is ``ko``, without BTF."""
    tree = tmp_path / "debian-host"
    (tree / "proc/sys/kernel").mkdir(parents=True)
    (tree / "proc/sys/kernel/osrelease").write_text(REL + "\n")
    (tree / "proc/kallsyms").write_text("ffffffffc0a00000 t kvm_arch_vcpu_load\t[kvm]\n"
                                        "ffffffffc0a01000 T kvm_vcpu_kick\t[kvm]\n")
    (tree / "etc").mkdir()
    (tree / "etc/os-release").write_text('PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\n')
    notes = tree / "sys/module/kvm/notes"
    notes.mkdir(parents=True)
    subprocess.run(["objcopy", "-O", "binary", "--only-section=.note.gnu.build-id", ko,
                    str(notes / ".note.gnu.build-id")], check=True, timeout=60)
    return tree


def test_kernel_table_resolves_each_build_once(tmp_path: Path) -> None:
    dbg = sorted(glob.glob(f"{CACHE}/dbg-*{REL}*/kvm.ko"))
    need(dbg, f"no kvm.ko debug file of {REL} in {CACHE} (make test fetches it)")
    need(shutil.which("pahole") and shutil.which("objcopy"), "needs pahole and objcopy")
    need(os.path.exists("/sys/kernel/btf/vmlinux"), "needs this kernel's BTF")
    ko = dbg[-1]
    reports = tmp_path / "precheck"
    reports.mkdir()
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    here = _tsalign("precheck", "--role", "host", "--json", env=env)
    (reports / "this-host.json").write_text(here.stdout)
    tree = _debian_host(tmp_path, ko)
    r = _tsalign("precheck", "--role", "host", "--root", str(tree), "--json", env=env)
    deb = json.loads(r.stdout)
    check = next(c for c in deb["checks"] if c["id"] == "kernel_build")
    assert check["status"] == "warn" and check["value"]["offsets"] is None, check
    assert check["value"]["traceable"] == ["kvm_vcpu_kick", "kvm_arch_vcpu_load"]
    (reports / "debian-1.json").write_text(r.stdout)
    (reports / "debian-2.json").write_text(r.stdout)

    # without the debug file: the Debian build is unresolved and the package is named
    r = _tsalign("kernels", str(reports), "--json", "--cache", "none", env=env)
    assert r.returncode == 4, r.stderr
    t = json.loads(r.stdout)
    deb_row = next(b for b in t["builds"] if b["release"] == REL)
    assert deb_row["status"] == "unresolved" and f"linux-image-{REL}-dbg" in deb_row["fix"]
    assert t["summary"]["unresolved"] == ["debian-1", "debian-2"] and t["nodes"]["this-host"]["status"] == "ok"

    # with it: resolved once for both nodes, by the controller's DWARF, equal to pahole's reading
    out = tmp_path / "kernels.json"
    r = _tsalign("kernels", str(reports), "--debuginfo-dir", os.path.dirname(ko), "-o", str(out), "--json", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    t = json.loads(out.read_text())
    deb_row = next(b for b in t["builds"] if b["release"] == REL)
    vcpu, arch = pahole.members(ko, "kvm_vcpu", "dwarf"), pahole.members(ko, "kvm_vcpu_arch", "dwarf")
    assert deb_row["route"] == "dwarf (controller)" and deb_row["source"] == ko
    assert deb_row["offsets"] == {"arch.tsc_offset": vcpu["arch"] + arch["tsc_offset"], "vcpu_id": vcpu["vcpu_id"]}
    assert deb_row["nodes"] == ["debian-1", "debian-2"] and deb_row["build_id"] == check["value"]["build_id"]
    for n in ("debian-1", "debian-2"):
        assert t["nodes"][n]["kprobe"] == (f"p:tsalign/kvm_vcpu_kick kvm_vcpu_kick tsc_offset=+{deb_row['offsets']['arch.tsc_offset']:#x}"
                                           f"(%di):u64 vcpu_id=+{deb_row['offsets']['vcpu_id']:#x}(%di):s32")
        assert t["nodes"][n]["why"] == "the seed's function"
    mine = next(b for b in t["builds"] if b["release"] != REL)
    own = next(c for c in json.loads(here.stdout)["checks"] if c["id"] == "kvm_tsc_offset_member")["value"]
    assert mine["route"] == "node btf" and mine["offsets"]["arch.tsc_offset"] == own["arch.tsc_offset"]

    # a node of the Debian build that computed its own offsets wrongly (edited: a BTF answer 8 bytes off):
    # the controller's debug file of the same build id contradicts it
    liar = json.loads((reports / "debian-1.json").read_text())
    for c in liar["checks"]:
        if c["id"] == "kernel_build":
            c["value"]["offsets"] = {"arch.tsc_offset": deb_row["offsets"]["arch.tsc_offset"] + 8,
                                     "vcpu_id": deb_row["offsets"]["vcpu_id"], "route": "btf", "source": "edited"}
    (reports / "debian-1.json").write_text(json.dumps(liar))
    r = _tsalign("kernels", str(reports), "--debuginfo-dir", os.path.dirname(ko), "--json", env=env)
    assert r.returncode == 5, r.stdout + r.stderr
    row = next(b for b in json.loads(r.stdout)["builds"] if b["release"] == REL)
    assert row["status"] == "inconsistent" and row["checked_against"]["agrees"] is False and ko in row["reason"]
    (reports / "debian-1.json").write_text((reports / "debian-2.json").read_text())

    # two nodes of one build that disagree: inconsistent, no kprobe for either
    doc = json.loads(here.stdout)
    for c in doc["checks"]:
        if c["id"] == "kernel_build":
            c["value"]["offsets"]["arch.tsc_offset"] += 8
    (reports / "this-host-edited.json").write_text(json.dumps(doc))
    r = _tsalign("kernels", str(reports), "--debuginfo-dir", os.path.dirname(ko), "--json", env=env)
    assert r.returncode == 5, r.stderr
    t = json.loads(r.stdout)
    assert t["nodes"]["this-host"]["kprobe"] is None and "different offsets" in t["nodes"]["this-host"]["reason"]
    assert t["nodes"]["debian-1"]["status"] == "ok"

    # a report whose kernel_build was edited into nonsense, and one that is not a report
    for c in doc["checks"]:
        if c["id"] == "kernel_build":
            c["value"]["release"] = 6
    (reports / "this-host-edited.json").write_text(json.dumps(doc))
    r = _tsalign("kernels", str(reports), env=env)
    assert r.returncode == 3 and "this-host-edited" in r.stderr
    (reports / "this-host-edited.json").unlink()
    (reports / "junk.json").write_text("[1, 2]")
    r = _tsalign("kernels", str(reports), env=env)
    assert r.returncode == 3 and "junk.json" in r.stderr
