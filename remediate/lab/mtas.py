"""What each MTA needs in a lab host: its packages as a filesystem layer, its users and directories (what the
Debian maintainer scripts would have made), and how to start and stop it.

Postfix is the machine's own (installed by scripts/setup-system.sh). Exim and Sendmail conflict with it
as Debian packages, so their .debs (downloaded once by setup-system.sh into DEB_CACHE) are unpacked with
`dpkg -x` into a layer that is stacked over the machine's root in each such host's overlay. The kernel
refuses a lower layer that lies under another lower layer ("/"), so each layer lives on its own tmpfs
(mail-domain.md section 9).
"""

from __future__ import annotations

import glob
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from remediate.errors import LabError, LabSetupError

DEB_CACHE = Path("/var/cache/remediate-lab/debs")
DEFAULT_MTA = "postfix"


@dataclass(frozen=True, slots=True)
class LabMta:
    """One MTA as the lab runs it."""

    name: str
    packages: tuple[str, ...]                      # Debian packages unpacked into its layer (none: the machine's)
    users: tuple[tuple[str, int, str], ...] = ()   # (name, uid = gid, home) system users and their groups
    dirs: tuple[tuple[str, int, str], ...] = ()    # (path, mode, owner user) made in the host
    start: tuple[tuple[str, ...], ...] = ()        # run inside the host, in order, to start it
    stop: tuple[str, ...] = ()


EXIM_USER = ("Debian-exim", 3101, "/var/spool/exim4")
# What sendmail-base and sendmail-bin's maintainer scripts do (update-alternatives, the queue and run
# directories, the generated .cf files, the maps), then the daemon as Debian's init script starts it.
SENDMAIL_START = """set -e
for tool in sendmail makemap mailq newaliases; do ln -sf /usr/libexec/sendmail/sendmail /usr/sbin/$tool; done
ln -sf /usr/libexec/sendmail/sendmail /usr/sbin/sendmail-mta
ln -sf /usr/libexec/sendmail/makemap /usr/sbin/makemap
mkdir -p /etc/mail/m4 /run/sendmail/mta /run/sendmail/msp /run/sendmail/stampdir
touch /etc/mail/m4/dialup.m4 /etc/mail/m4/provider.m4
chown root:smmta /run/sendmail/mta; chmod 2755 /run/sendmail/mta
chown smmsp:smmsp /run/sendmail/msp; chmod 2775 /run/sendmail/msp
cd /etc/mail
m4 sendmail.mc > sendmail.cf
m4 submit.mc > submit.cf
makemap hash access < access
/usr/sbin/sendmail-mta -bi
/usr/sbin/sendmail-mta -L sm-mta -bd -q10m
"""
#: the hash: tables a scenario's main.cf names are built first, as an administrator's postmap would
POSTFIX_START = """\
for map in $(postconf -n | grep -o 'hash:/etc/postfix/[^ ,]*' | sed 's/^hash://' | sort -u); do postmap "$map"; done
exec /usr/sbin/postfix start
"""
SMMTA_USER, SMMSP_USER = ("smmta", 3102, "/var/lib/sendmail"), ("smmsp", 3103, "/var/lib/sendmail")

MTAS: dict[str, LabMta] = {m.name: m for m in (
    LabMta("postfix", (), start=(("sh", "-c", POSTFIX_START),), stop=("/usr/sbin/postfix", "stop")),
    LabMta("exim", ("exim4-base", "exim4-config", "exim4-daemon-light", "libidn12"),
           users=(EXIM_USER,),
           dirs=(("/var/spool/exim4", 0o750, "Debian-exim"), ("/var/spool/exim4/db", 0o750, "Debian-exim"),
                 ("/var/spool/exim4/input", 0o750, "Debian-exim"), ("/var/spool/exim4/msglog", 0o750, "Debian-exim"),
                 ("/var/log/exim4", 0o750, "Debian-exim"), ("/var/lib/exim4", 0o755, "root")),
           start=(("/etc/init.d/exim4", "start"),), stop=("/etc/init.d/exim4", "stop")),
    LabMta("sendmail", ("sendmail-base", "sendmail-bin", "sendmail-cf", "sensible-mda", "m4", "procmail",
                        "liblockfile1", "liblockfile-bin", "lockfile-progs"),
           users=(SMMTA_USER, SMMSP_USER),
           dirs=(("/var/spool/mqueue", 0o2750, "root"), ("/var/spool/mqueue-client", 0o2770, "smmsp"),
                 ("/var/lib/sendmail", 0o2750, "root")),
           start=(("sh", "-c", SENDMAIL_START),), stop=("pkill", "-x", "sendmail")),
)}


def debs(mta: str) -> list[Path]:
    """The cached .deb of each of `mta`'s packages; LabSetupError naming the missing ones."""
    found, missing = [], []
    for package in MTAS[mta].packages:
        hits = sorted(glob.glob(str(DEB_CACHE / f"{package}_*.deb")))
        (found.append(Path(hits[-1])) if hits else missing.append(package))
    if missing:
        raise LabSetupError(f"the {mta} lab hosts need these packages downloaded into {DEB_CACHE}: "
                            f"{', '.join(missing)}; run `sudo scripts/setup-system.sh`")
    return found


def build_layer(mta: str, target: Path) -> None:
    """Mount a tmpfs at `target` and unpack `mta`'s packages into it. LabError when a step fails."""
    packages = debs(mta)
    target.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755,size=64m", "tmpfs", str(target)], check=True,
                       capture_output=True)
        for deb in packages:
            subprocess.run(["dpkg-deb", "-x", str(deb), str(target)], check=True, capture_output=True)
        _merge_usr(target)
    except subprocess.CalledProcessError as exc:
        raise LabError(f"cannot build the {mta} layer in {target}: {exc.stderr.decode(errors='replace')}") from exc


def _merge_usr(target: Path) -> None:
    """Move the layer's /lib, /bin, ... into /usr where the machine has merged /usr: a real directory in an
    upper layer would hide the machine's symlink (and with it the dynamic loader)."""
    for top in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        machine, layer = Path("/") / top, target / top
        if machine.is_symlink() and layer.is_dir() and not layer.is_symlink():
            dest = target / os.readlink(machine)
            dest.mkdir(parents=True, exist_ok=True)
            subprocess.run(["cp", "-a", f"{layer}/.", str(dest)], check=True, capture_output=True)
            subprocess.run(["rm", "-rf", "--", str(layer)], check=True, capture_output=True)


def remove_layer(target: Path) -> None:
    """Unmount a layer (lazily: a host still using it keeps it until it ends). Safe to repeat."""
    subprocess.run(["umount", "-l", str(target)], capture_output=True, check=False)
