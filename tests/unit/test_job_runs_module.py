"""The tsalign_job_runs module (capture.yml's layout of a job's run directories), run by real Ansible (ad hoc, on
localhost): bundles unpacked, host links relative, run.json written; a re-run and check mode change nothing; a
bundle with a member that would land outside its directory, or is not a plain file, is refused by name and nothing
of it is written."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _module(runs: list[dict], check: bool = False) -> dict:
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
    argv = ["ansible", "localhost", "-i", "localhost,", "-c", "local", "-e", f"ansible_python_interpreter={sys.executable}",
            "-m", "tsalign_job_runs", "-a", json.dumps({"runs": runs}), *(["--check"] if check else [])]
    r = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert "=> " in r.stdout, (r.stdout, r.stderr)  # "localhost | CHANGED => {...}" (the default callback)
    status, doc = r.stdout.split("=> ", 1)
    return {**json.loads(doc), "failed": "FAILED" in status}


def _tar(path: Path, members: dict[str, bytes], link: str | None = None) -> None:
    with tarfile.open(path, "w") as t:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
        if link:
            info = tarfile.TarInfo(link)
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            t.addfile(info)


def test_lays_out_runs_once(tmp_path: Path) -> None:
    host = tmp_path / "hosts-R" / "kvm-01"
    host.mkdir(parents=True)
    runs = []
    for g in ("web-01", "db-01"):
        d = tmp_path / f"{g}-R"
        d.mkdir()
        _tar(d / "guest.tar", {"manifest.json": b'{"role": "guest"}', "events.jsonl": g.encode() * 100})
        runs.append({"dir": str(d), "host": str(host), "run": {"node": "kvm-01", "vm": g, "run": "R", "guest": g}})
    planned = _module(runs, check=True)
    assert planned["changed"] and not (tmp_path / "web-01-R" / "guest").exists()  # check mode: nothing done
    done = _module(runs)
    assert done["changed"] and done["unpacked"] == [r["dir"] for r in runs], done
    for g in ("web-01", "db-01"):
        d = tmp_path / f"{g}-R"
        assert (d / "guest" / "events.jsonl").read_bytes() == g.encode() * 100
        assert os.readlink(d / "host") == "../hosts-R/kvm-01" and (d / "host").resolve() == host
        assert json.loads((d / "run.json").read_text()) == {"node": "kvm-01", "vm": g, "run": "R", "guest": g}
    again = _module(runs)
    assert not again["changed"] and again["unpacked"] == [], again


def test_refuses_a_member_outside_the_bundle(tmp_path: Path) -> None:
    host = tmp_path / "host"
    host.mkdir()
    for i, (members, link) in enumerate([({"../escaped": b"x"}, None), ({"/abs": b"x"}, None),
                                         ({"manifest.json": b"{}"}, "events.jsonl")]):
        d = tmp_path / f"g{i}"
        d.mkdir()
        _tar(d / "guest.tar", members, link)
        r = _module([{"dir": str(d), "host": str(host), "run": {}}])
        assert r.get("failed") and "is not a plain file or directory inside the bundle" in r["msg"], r
        assert sorted(p.name for p in d.iterdir()) == ["guest.tar"]
    assert not (tmp_path / "escaped").exists()
    r = _module([{"dir": str(tmp_path / "g0"), "host": str(tmp_path / "no-host"), "run": {}}])
    assert r.get("failed") and "no host bundle directory" in r["msg"], r
