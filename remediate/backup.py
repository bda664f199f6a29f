"""The backup store: every file a run may change, saved on the host and locally, with a manifest.

Layout (same on both sides):
    host:  /var/backups/remediate/RUN_ID/{manifest.json, files/<absolute path>}   dirs 0700, files 0600
    local: backups/HOST/RUN_ID/{manifest.json, files/<absolute path>}
The local copy is written and fsynced before the host copy, and both before the first remote write.
Every copy is checked against the manifest's sha256 before it is used; a mismatch is refused, naming
the file.

Listing, checking and pruning old runs (`remediate backups ...`) live in `remediate.backups`.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from remediate import __version__
from remediate.errors import BackupError, CommandError
from remediate.transport import Connection, FileStat

REMOTE_ROOT = "/var/backups/remediate"


@dataclass(frozen=True, slots=True)
class FileRecord:
    path: str
    sha256: str
    size: int
    mode: int
    uid: int
    gid: int
    owner: str
    group: str
    mtime: int
    mtime_ns: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "sha256": self.sha256, "size": self.size, "mode": f"{self.mode:04o}",
                "uid": self.uid, "gid": self.gid, "owner": self.owner, "group": self.group,
                "mtime": self.mtime, "mtime_ns": self.mtime_ns}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FileRecord:
        return cls(d["path"], d["sha256"], int(d["size"]), int(str(d["mode"]), 8), int(d["uid"]),
                   int(d["gid"]), d.get("owner", ""), d.get("group", ""), int(d["mtime"]),
                   int(d.get("mtime_ns", int(d["mtime"]) * 10**9)))


@dataclass(frozen=True, slots=True)
class Manifest:
    run_id: str
    host: str
    address: str
    host_key: str | None
    tool_version: str
    playbook: str
    created: str
    files: tuple[FileRecord, ...]

    def to_json(self) -> bytes:
        return json.dumps({"run_id": self.run_id, "host": self.host, "address": self.address,
                           "host_key": self.host_key, "tool_version": self.tool_version,
                           "playbook": self.playbook, "created": self.created,
                           "files": [f.as_dict() for f in self.files]}, indent=2).encode() + b"\n"

    @classmethod
    def from_json(cls, data: bytes, where: str) -> Manifest:
        try:
            d = json.loads(data)
            return cls(d["run_id"], d["host"], d["address"], d.get("host_key"), d["tool_version"],
                       d["playbook"], d["created"], tuple(FileRecord.from_dict(f) for f in d["files"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise BackupError(f"manifest {where} is unreadable or incomplete: {exc}") from exc


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _fsync_write(path: Path, data: bytes, mode: int = 0o600) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".part")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


class BackupStore:
    """Backups of one run's files, local under `root`, remote under REMOTE_ROOT on each host."""

    def __init__(self, root: Path | str, remote_root: str = REMOTE_ROOT) -> None:
        self.root = Path(root).absolute()
        self.remote_root = remote_root

    def local_dir(self, host: str, run_id: str) -> Path:
        return self.root / host / run_id

    def remote_dir(self, run_id: str) -> str:
        return f"{self.remote_root}/{run_id}"

    # ------------------------------------------------------------------ save
    def save(self, conn: Connection, run_id: str, playbook: str,
             files: dict[str, tuple[bytes, FileStat]]) -> Manifest:
        """Back up `files` ({path: (content, stat)}): local copy first (fsynced), then on the host,
        then re-read the host copy's checksums. Raises BackupError if either copy cannot be made."""
        records = tuple(FileRecord(path, sha256(data), len(data), st.mode, st.uid, st.gid, st.owner,
                                   st.group, st.mtime, st.mtime_ns) for path, (data, st) in files.items())
        manifest = Manifest(run_id, conn.name, conn.host.address, conn.peer_fingerprint, __version__,
                            playbook, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), records)
        local = self.local_dir(conn.name, run_id)
        for path, (data, _) in files.items():
            _fsync_write(local / "files" / path.lstrip("/"), data)
        _fsync_write(local / "manifest.json", manifest.to_json())
        remote = self.remote_dir(run_id)
        try:
            conn.run(["install", "-d", "-m", "0700", self.remote_root, remote, f"{remote}/files"])
            for path, (data, _) in files.items():
                target = f"{remote}/files{path}"
                conn.run(["install", "-d", "-m", "0700", os.path.dirname(target)])
                conn.write_atomic(target, data, mode=0o600, uid=0, gid=0)
            conn.write_atomic(f"{remote}/manifest.json", manifest.to_json(), mode=0o600, uid=0, gid=0)
            sums = conn.run(["sha256sum", "--", *(f"{remote}/files{p}" for p in files)]).out.split()
        except CommandError as exc:
            raise BackupError(f"{conn.name}: could not store the backup on the host: {exc}") from exc
        remote_sums = dict(zip(sums[1::2], sums[0::2], strict=True))
        for rec in records:
            if remote_sums.get(f"{remote}/files{rec.path}") != rec.sha256:
                raise BackupError(f"{conn.name}: the host copy of {rec.path} does not match what was read")
        return manifest

    # ------------------------------------------------------------------ load
    def local_manifest(self, host: str, run_id: str) -> Manifest | None:
        path = self.local_dir(host, run_id) / "manifest.json"
        return Manifest.from_json(path.read_bytes(), str(path)) if path.exists() else None

    def remote_manifest(self, conn: Connection, run_id: str) -> Manifest | None:
        path = f"{self.remote_dir(run_id)}/manifest.json"
        if not conn.exists(path):
            return None
        return Manifest.from_json(conn.read_file(path), f"{conn.name}:{path}")

    def manifest(self, conn: Connection, run_id: str) -> Manifest:
        """The run's manifest for this host: local if present, else the host's copy."""
        manifest = self.local_manifest(conn.name, run_id) or self.remote_manifest(conn, run_id)
        if manifest is None:
            raise BackupError(f"{conn.name}: no backup of run {run_id} (neither in {self.local_dir(conn.name, run_id)}"
                              f" nor in {self.remote_dir(run_id)} on the host)")
        return manifest

    def content(self, conn: Connection, manifest: Manifest, rec: FileRecord,
                warnings: list[str] | None = None) -> bytes:
        """The backed-up bytes of `rec`, from whichever copy is present and intact.

        Refuses (BackupError naming the file and copy) when a present copy fails its checksum and no
        intact copy exists. A corrupt copy passed over for an intact one is described in `warnings`."""
        problems: list[str] = []
        local = self.local_dir(conn.name, manifest.run_id) / "files" / rec.path.lstrip("/")
        if local.exists():
            data = local.read_bytes()
            if sha256(data) == rec.sha256:
                return data
            problems.append(f"local copy {local} is corrupt (sha256 {sha256(data)[:12]}…, manifest says "
                            f"{rec.sha256[:12]}…)")
        remote = f"{self.remote_dir(manifest.run_id)}/files{rec.path}"
        if conn.exists(remote):
            data = conn.read_file(remote)
            if sha256(data) == rec.sha256:
                if warnings is not None:
                    warnings += [p + f"; used the host copy {remote} instead" for p in problems]
                return data
            problems.append(f"host copy {remote} is corrupt (sha256 {sha256(data)[:12]}…, manifest says "
                            f"{rec.sha256[:12]}…)")
        if not problems:
            problems.append("no copy found locally or on the host")
        raise BackupError(f"{conn.name}: refusing to restore {rec.path}: " + "; ".join(problems))

    def runs(self, host: str | None = None) -> list[tuple[str, str]]:
        """(host, run_id) pairs present locally, oldest run first."""
        if not self.root.is_dir():
            return []
        pairs = []
        for hdir in sorted(p for p in self.root.iterdir() if p.is_dir()):
            if host and hdir.name != host:
                continue
            pairs += [(hdir.name, r.name) for r in hdir.iterdir() if (r / "manifest.json").exists()]
        return sorted(pairs, key=lambda p: (p[1], p[0]))
