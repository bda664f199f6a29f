"""Lab scenarios for faults of the MTA itself: a Postfix whose reload wedges its master.

The real case (mail-domain.md section 9): Postfix logging through postlogd (`maillog_file` set, as in
containers), a main.cf that makes every Postfix program warn at start (a parameter set twice), and a
network namespace with Linux's default `net.unix.max_dgram_qlen = 10`. `postfix reload` can then wedge the
master: it blocks writing a log record to the full postlog socket while postlogd is being restarted. Port 25
takes connections but never greets, and a second `postfix reload` hangs. It is a race (seen in 2 of 3 runs),
so the tests use a deterministic stand-in:

- `wedged-reload`: an open relay whose `postfix` command (a wrapper in /usr/local/sbin, ahead of
  /usr/sbin in root's and sudo's PATH) reloads, then SIGSTOPs the master, as the wedge leaves it: the
  listening socket takes connections, nobody greets. While the master is stopped, `postfix reload` and
  `postfix stop` hang (as any Postfix command that logs would), so only ending the master through its pid
  file recovers it. Every reload wedges. The lab itself starts and stops Postfix through /usr/sbin/postfix.
  With /run/lab-reload-reopens-relay present, each reload first sets `mynetworks = 0.0.0.0/0` (so the
  verification fails and the rollback's own reload wedges as well).

The real configuration was tried in the lab (postlogd, `biff` set twice, max_dgram_qlen 10): six reloads, no
wedge; Debian 12's Postfix 3.7 does not warn about a parameter set twice, so it lacks the start-up warnings
the race needs. It is not a scenario until it reproduces.

`FAULT_SCENARIOS` is merged into `remediate.lab.scenarios.SCENARIOS` by the package; `lab up --scenario
all` leaves these out (they are for the fault tests).
"""

from __future__ import annotations

from pathlib import Path

from remediate.lab.scenarios import Scenario, scenario_files

WRAPPER_PATH = "/usr/local/sbin/postfix"
WEDGE_WRAPPER = """\
#!/bin/sh
# remediate lab, scenario wedged-reload: `postfix reload` wedges the master (see fault_scenarios.py)
real=/usr/sbin/postfix
pidfile=/var/spool/postfix/pid/master.pid
master() { awk '{ print $1; exit }' "$pidfile" 2>/dev/null; }
stopped() { pid=$(master); [ -n "$pid" ] && [ "$(awk '{ print $3 }' "/proc/$pid/stat" 2>/dev/null)" = T ]; }
case "$1" in
reload|stop)
    if stopped; then
        echo "postfix: wedged master: $1 hangs (lab scenario wedged-reload)" >&2
        sleep 300
        exit 1
    fi ;;
esac
if [ "$1" = reload ]; then
    # a test that also wants the verification to fail (so the rollback's reload wedges too) creates this
    [ -e /run/lab-reload-reopens-relay ] && /usr/sbin/postconf -e 'mynetworks = 0.0.0.0/0'
    "$real" "$@" || exit
    sleep 1     # the master takes the HUP and lets its idle smtpd processes go
    kill -STOP "$(master)"
    exit 0
fi
exec "$real" "$@"
"""


def _wedged_reload(fqdn: str, stock: Path) -> dict[str, str]:
    return {**scenario_files("open-relay", fqdn, stock), WRAPPER_PATH: WEDGE_WRAPPER}


FAULT_SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario("wedged-reload", "open relay; `postfix reload` wedges the master (port 25 takes connections, never "
             "greets; a second reload hangs)", ("open_relay",), _wedged_reload),
)}
