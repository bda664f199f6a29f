"""The shell's own commands, run on this machine (`PosixShell` over `transport.Local`): gather frames every
op's bytes exactly, whatever they contain, and private_copy builds the copy a validation reads."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from remediate.errors import CommandError
from remediate.model import Host
from remediate.shell import FileStat, PosixShell, Read, Run, Stat
from remediate.transport import Local


@pytest.fixture(scope="module")
def shell() -> PosixShell:
    return PosixShell(Local(Host("local", "127.0.0.1")))


def test_gather_returns_each_op_in_order_in_one_round_trip(shell, tmp_path, monkeypatch):
    data = bytes(range(256)) * 3 + b"\n\n"          # every byte value, NULs and newlines included
    (tmp_path / "a").write_bytes(data)
    os.chmod(tmp_path / "a", 0o640)
    calls = []
    run = shell.conn.run
    monkeypatch.setattr(shell.conn, "run", lambda argv, **kw: calls.append(argv) or run(argv, **kw))
    got = shell.gather([Read(str(tmp_path / "a")), Stat(str(tmp_path / "a")),
                        Run(("sh", "-c", "printf 'out'; printf 'err' >&2; exit 7"), check=False),
                        Read(str(tmp_path / "absent"), missing_ok=True), Run(("printf", ""))])
    assert len(calls) == 1
    assert got[0] == data
    assert isinstance(got[1], FileStat) and got[1].mode == 0o640 and got[1].size == len(data)
    assert (got[2].rc, got[2].stdout, got[2].stderr) == (7, b"out", b"err")
    assert got[3] is None and got[4].rc == 0 and got[4].stdout == b""


def test_gather_raises_for_a_failed_checked_op_naming_the_command(shell, tmp_path):
    with pytest.raises(CommandError, match="absent"):
        shell.gather([Run(("true",)), Read(str(tmp_path / "absent"))])
    with pytest.raises(CommandError, match="exit 3.* exited 3"):
        shell.gather([Run(("sh", "-c", "exit 3"))])


@settings(max_examples=25, deadline=None)
@given(st.lists(st.binary(max_size=300), min_size=1, max_size=6))
def test_gather_frames_arbitrary_outputs_exactly(shell, tmp_path_factory, blobs):
    directory = tmp_path_factory.mktemp("blobs")
    paths = []
    for i, blob in enumerate(blobs):
        (directory / str(i)).write_bytes(blob)
        paths.append(str(directory / str(i)))
    assert shell.gather([Read(p) for p in paths]) == blobs


def test_private_copy_replaces_files_with_the_given_bytes_mode_and_time_and_is_removed(shell, tmp_path):
    source = tmp_path / "etc"
    source.mkdir()
    (source / "main.cf").write_text("old\n")
    (source / "other.cf").write_text("kept\n")
    stat = FileStat(0o604, os.getuid(), os.getgid(), 0, 1_600_000_000, mtime_ns=1_600_000_000_123_456_789)
    calls = []
    run = shell.conn.run
    shell.conn.run = lambda argv, **kw: calls.append(argv) or run(argv, **kw)
    try:
        with shell.private_copy("remediate-test", str(source), {"main.cf": (b"new\n", stat)},
                                then=lambda d: [Read(f"{d}/main.cf"), Run(("cat", f"{d}/other.cf")),
                                                Read(f"{d}/main.cf")]) as copy:
            assert len(calls) == 1          # the copy and the ops gathered with it: one round trip
            assert copy.results[0] == copy.results[2] == b"new\n" and copy.results[1].stdout == b"kept\n"
            copied = Path(copy.path)
    finally:
        shell.conn.run = run
    with shell.private_copy("remediate-test", str(source), {"main.cf": (b"new\n", stat)}) as copy:
        copied = Path(copy.path)
        assert copy.results == []
        # the copy's directory is the source's (mode, owner): what the MTA's programs read there is readable as
        # in the source, and nobody else can change it
        assert copied.stat().st_mode & 0o777 == source.stat().st_mode & 0o777 and copied.stat().st_uid == os.getuid()
        assert copied != source and (copied / "other.cf").read_text() == "kept\n"
        assert (copied / "main.cf").read_bytes() == b"new\n"
        st_ = (copied / "main.cf").stat()
        assert st_.st_mode & 0o777 == 0o604 and int(st_.st_mtime) == 1_600_000_000
        assert (source / "main.cf").read_text() == "old\n"       # the live file is never written
    assert copied.exists()             # removed by the shell's next command, which it rides along with
    calls.clear()
    shell.conn.run = lambda argv, **kw: calls.append(argv) or run(argv, **kw)
    try:
        shell.gather([Read(str(source / "main.cf"))])
    finally:
        shell.conn.run = run
    assert len(calls) == 1 and not copied.exists()
    with shell.private_copy("remediate-test", str(source), {}) as copy:
        copied = Path(copy.path)
    shell.close()                      # or when the shell closes
    assert not copied.exists()


def test_write_atomic_backdates_a_written_file_but_never_to_or_before_the_one_it_replaced(shell, tmp_path):
    """Postfix waits for a configuration file modified in the last second to cool down (util/dict.c): a
    backdated write is read at once, and stays newer than the file it replaced."""
    target = tmp_path / "main.cf"
    target.write_bytes(b"old\n")
    os.utime(target, ns=(0, 1_000_000_000_000_000_000))          # 2001: long cold
    st = shell.stat(str(target))
    digest = shell.write_atomic(str(target), b"new\n", mode=0o644, uid=st.uid, gid=st.gid, backdate=2)
    now = time.time()
    assert target.read_bytes() == b"new\n" and len(digest) == 64
    assert now - 4 < target.stat().st_mtime <= now - 1             # whole seconds, 2 s back by the host's clock
    # the file it replaces changed a moment ago: the new one is dated at the write, never before it
    shell.write_atomic(str(target), b"newer\n", mode=0o644, uid=st.uid, gid=st.gid, backdate=2)
    assert target.stat().st_mtime > time.time() - 1.5
    # without backdate the write keeps the time of the write
    os.utime(target, ns=(0, 1_000_000_000_000_000_000))
    shell.write_atomic(str(target), b"plain\n", mode=0o644, uid=st.uid, gid=st.gid)
    assert target.stat().st_mtime > time.time() - 1.5


def test_put_files_writes_every_file_whole_in_order_and_reads_back_their_digests(shell, tmp_path):
    root = tmp_path / "run"
    files = {"files/etc/postfix/main.cf": b"a = 1\n" * 1000, "files/etc/postfix/master.cf": b"\x00\xff\n",
             "manifest.json": b"{}"}
    dirs = [str(tmp_path), str(root), f"{root}/files", f"{root}/files/etc/postfix"]
    sums = shell.put_files(str(root), files, dirs=dirs)
    assert sums == {rel: hashlib.sha256(data).hexdigest() for rel, data in files.items()}
    for rel, data in files.items():
        assert (root / rel).read_bytes() == data and (root / rel).stat().st_mode & 0o777 == 0o600
    assert all(os.stat(d).st_mode & 0o777 == 0o700 for d in dirs)
    assert sorted(p.name for p in root.iterdir()) == ["files", "manifest.json"]   # nothing left behind


def test_remove_if_same_removes_only_the_bytes_it_was_given(shell, tmp_path):
    lock = tmp_path / "lock.json"
    lock.write_bytes(b'{"run_id": "a"}')
    assert not shell.remove_if_same(str(lock), b'{"run_id": "b"}') and lock.exists()
    assert shell.remove_if_same(str(lock), b'{"run_id": "a"}') and not lock.exists()
    assert not shell.remove_if_same(str(lock), b'{"run_id": "a"}')


def test_run_and_wait_children_waits_for_the_daemons_children_from_before_the_command(shell, tmp_path):
    import subprocess

    daemon = subprocess.Popen(["sh", "-c", "sleep 0.4 & sleep 0.4 & wait"])
    try:
        pidfile = tmp_path / "daemon.pid"
        pidfile.write_text(f"  {daemon.pid}\n")
        time.sleep(0.05)                                   # its two children are running
        started = time.monotonic()
        assert shell.run_and_wait_children(["true"], pidfile=str(pidfile), within=3) is True
        assert time.monotonic() - started >= 0.2           # it waited for them
        assert daemon.wait(timeout=5) == 0
        # no pid file (or no children): nothing to wait for; the command's failure is a CommandError
        assert shell.run_and_wait_children(["true"], pidfile=str(tmp_path / "absent.pid"), within=3) is True
        with pytest.raises(CommandError):
            shell.run_and_wait_children(["false"], pidfile=str(pidfile), within=3)
    finally:
        daemon.kill()


def test_run_and_wait_children_gives_up_after_within_seconds(shell, tmp_path):
    import subprocess

    daemon = subprocess.Popen(["sh", "-c", "sleep 30 & wait"])
    try:
        pidfile = tmp_path / "daemon.pid"
        pidfile.write_text(f"{daemon.pid}\n")
        time.sleep(0.05)
        started = time.monotonic()
        assert shell.run_and_wait_children(["true"], pidfile=str(pidfile), within=0.2) is False
        assert time.monotonic() - started < 5
    finally:
        subprocess.run(["pkill", "-P", str(daemon.pid)])
        daemon.kill()


def test_private_copy_never_reuses_a_path_that_exists_and_leaves_nothing_when_the_copy_fails(shell, tmp_path,
                                                                                            monkeypatch):
    import secrets

    source = tmp_path / "etc"
    source.mkdir()
    (source / "main.cf").write_text("old\n")
    planted = Path("/tmp/remediate-test.0000000000000000")
    planted.symlink_to(tmp_path)          # someone else's link where the copy would go
    monkeypatch.setattr(secrets, "token_hex", lambda n: "0" * (2 * n))
    try:
        with pytest.raises(CommandError), shell.private_copy("remediate-test", str(source), {}):
            pass
        assert planted.is_symlink() and list(tmp_path.iterdir()) == [source]   # nothing written through it
    finally:
        planted.unlink()
    with pytest.raises(CommandError), shell.private_copy("remediate-test", str(tmp_path / "absent"), {}):
        pass
    assert not Path("/tmp/remediate-test.0000000000000000").exists()          # removed after the failed copy
