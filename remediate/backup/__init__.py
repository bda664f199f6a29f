"""Backups: the store (host copy + local copy + manifest) and restore (`store`), and housekeeping of old
runs (`housekeeping`: list, check both copies, prune)."""

from remediate.backup.store import BackupStore, FileRecord, Manifest, Saved, restore, sha256

__all__ = ["BackupStore", "FileRecord", "Manifest", "Saved", "restore", "sha256"]
