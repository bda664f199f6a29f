#!/usr/bin/env bash
# Installs the system packages the lab needs (Debian 12), non-interactively; chromium renders the HTML
# plan in a test (headless, no network); iptables makes the fault tests' closed, filtered and lossy links.
# Safe to run again: apt-get skips what is already installed.
set -euo pipefail
if [ "$(id -u)" -ne 0 ]; then
  echo "setup-system.sh: must run as root (the lab creates network namespaces and mounts)" >&2
  exit 2
fi
export DEBIAN_FRONTEND=noninteractive
# Postfix asks one debconf question at install time; answer it so nothing prompts.
echo "postfix postfix/main_mailer_type select Internet Site" | debconf-set-selections
echo "postfix postfix/mailname string lab.example" | debconf-set-selections
pkgs="postfix openssh-server openssh-client sasl2-bin libsasl2-modules sudo nmap swaks iproute2 iptables util-linux procps openssl chromium"
missing=""
for p in $pkgs; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends $missing
fi
# Exim and Sendmail conflict with Postfix as installed packages; the lab unpacks their .debs into a
# layer of its own for each such host (remediate/lab/mtas.py), so only download them here.
debs=/var/cache/remediate-lab/debs
want="exim4-base exim4-config exim4-daemon-light libidn12 sendmail-base sendmail-bin sendmail-cf sensible-mda m4 procmail liblockfile1 liblockfile-bin lockfile-progs"
mkdir -p "$debs"
absent=""
for p in $want; do ls "$debs/${p}_"*.deb >/dev/null 2>&1 || absent="$absent $p"; done
if [ -n "$absent" ]; then
  [ -n "$missing" ] || apt-get update -qq
  (cd "$debs" && apt-get download -qq $absent 2>&1 | grep -v "couldn't be accessed by user '_apt'" || true)
  for p in $absent; do ls "$debs/${p}_"*.deb >/dev/null 2>&1 || { echo "setup-system.sh: could not download $p" >&2; exit 1; }; done
fi
# Debian starts services at install time when it can; the lab runs its own copies in
# namespaces, so the machine's own postfix and sshd are stopped and left alone.
for svc in postfix ssh; do
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$svc" 2>/dev/null; then
    systemctl stop "$svc" || true
  fi
done
if [ -x /usr/sbin/postfix ]; then /usr/sbin/postfix stop >/dev/null 2>&1 || true; fi
