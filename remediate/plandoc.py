"""A plan rendered for a change ticket: Markdown, or one self-contained HTML page (inline style, no script,
nothing fetched), from the sealed plan document (`remediate.planfile`). Pure: text in, text out; the text out
is always encodable (`printable`: a byte of a configuration file that was not UTF-8 shows as `\\xNN`).

Both show the same things: the header (when made, by which version, the expiry, the inventory's and the
plan's digests, the signature), summary counts, what will change and be reloaded, and one section per host
with its findings, the unified diff, the commands that will run, and what approval pins (host key, driver
digest, the sha256 of every resource read).
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

from remediate.model import printable
from remediate.planfile import signature_text

Doc = Mapping[str, Any]


def _changing(doc: Doc) -> list[Mapping[str, Any]]:
    return [h for h in doc["hosts"] if h.get("status") == "would_change"]


def _header(doc: Doc) -> list[tuple[str, str]]:
    inv = doc.get("inventory") or {}
    return [("plan run", str(doc.get("run_id"))),
            ("made", f"{doc.get('created')} by remediate {(doc.get('tool') or {}).get('version')}"),
            ("expires", str(doc.get("expires"))),
            ("inventory", f"{inv.get('path')} (sha256 {inv.get('sha256')})"),
            ("plan digest", f"sha256 {(doc.get('digest') or {}).get('value', '(unsealed)')}"),
            ("signature", signature_text(doc))]


def _summary(doc: Doc) -> str:
    counts = {k: v for k, v in (doc.get("summary") or {}).items() if k != "hosts"}
    return f"{len(doc['hosts'])} host(s): " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))


def _reloads(doc: Doc) -> str:
    changing = _changing(doc)
    if not changing:
        return "Nothing will change and nothing will be reloaded."
    return ("Will change, then validate, reload and verify from outside (rolled back on any failure): "
            + ", ".join(h["name"] for h in changing) + ". Every other host is left alone.")


def _finding_lines(host: Mapping[str, Any]) -> list[str]:
    return [f"{f.get('code')} ({f.get('source')}): {f.get('detail')}" for f in host.get("findings_before") or []]


def _commands(host: Mapping[str, Any], kind: str) -> Sequence[str]:
    return list((host.get("commands") or {}).get(kind) or [])


def _driver(host: Mapping[str, Any]) -> str:
    d = host.get("driver") or {}
    return f"{d.get('name')} (playbook {d.get('playbook')}, digest {str(d.get('digest'))[:16]}...)" if d else "-"


# ---------------------------------------------------------------------- Markdown
def markdown(doc: Doc) -> str:
    """The plan as Markdown (GitHub/GitLab/Jira-friendly): header table, summary, a section per host."""
    out = [f"# Change plan {doc.get('run_id')}", "", "| | |", "|---|---|"]
    out += [f"| {k} | {_md_cell(v)} |" for k, v in _header(doc)]
    out += ["", "## Summary", "", _summary(doc), "", _reloads(doc), ""]
    for host in doc["hosts"]:
        out += _md_host(host)
    return printable("\n".join(out).rstrip() + "\n")


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|")


def _md_host(host: Mapping[str, Any]) -> list[str]:
    out = [f"## {host['name']} ({host['address']}): {host['status']}", ""]
    if host.get("error"):
        out += [f"**Not approved for change:** {host['error']}", ""]
    out += [f"- host key seen: `{host.get('host_key') or '-'}`", f"- driver: {_driver(host)}"]
    findings = _finding_lines(host)
    out += ["- findings:" if findings else "- findings: none"] + [f"  - {f}" for f in findings]
    for kind, title in (("validate", "validate (private copy)"), ("activate", "activate (reload)")):
        cmds = _commands(host, kind)
        if cmds and host.get("status") == "would_change":
            out += [f"- {title}:"] + [f"  - `{c}`" for c in cmds]
    resources = host.get("resources") or {}
    if resources:
        out += ["- sha256 of every resource read (drift is checked against these):"]
        out += [f"  - `{path}` {digest}" for path, digest in resources.items()]
    if host.get("simulation"):
        out += [f"- simulated outside session against the candidate: {host['simulation']}"]
    out.append("")
    if host.get("diff"):
        out += ["```diff", host["diff"].rstrip("\n"), "```", ""]
    return out


# ---------------------------------------------------------------------- HTML
_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem auto;max-width:70rem;padding:0 1rem;
color:#1d1d1f}
h1{font-size:1.5rem}h2{font-size:1.2rem;border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2rem}
table.meta td{padding:.1rem .8rem .1rem 0;vertical-align:top}table.meta td:first-child{font-weight:600}
code,pre{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.85rem}
pre.diff{background:#f6f8fa;border:1px solid #ddd;padding:.6rem;overflow-x:auto;line-height:1.6}
.add{color:#116329;background:#dafbe1}.del{color:#82071e;background:#ffebe9}.hunk{color:#0550ae}
.status{font-weight:600}.would_change{color:#9a6700}.compliant{color:#116329}
.failed,.unreachable{color:#82071e}.skipped{color:#57606a}.error{color:#82071e}
"""


def html_page(doc: Doc) -> str:
    """The plan as one HTML page: inline CSS, no script, no external reference (readable offline).
    Each host is a `<section class="host" id="host-NAME">`; its diff a `<pre class="diff">`."""
    e = html.escape
    title = f"Change plan {doc.get('run_id')}"
    rows = "".join(f"<tr><td>{e(k)}</td><td>{e(v)}</td></tr>" for k, v in _header(doc))
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>{e(title)}</title><style>{_STYLE}</style></head><body>",
             f"<h1>{e(title)}</h1>", f'<table class="meta">{rows}</table>',
             '<section id="summary"><h2>Summary</h2>', f"<p>{e(_summary(doc))}</p>", f"<p>{e(_reloads(doc))}</p>",
             "</section>"]
    parts += [_html_host(host) for host in doc["hosts"]]
    parts.append("</body></html>")
    return printable("\n".join(parts) + "\n")


def _html_host(host: Mapping[str, Any]) -> str:
    e = html.escape
    name = str(host["name"])
    items = [f"<li>host key seen: <code>{e(str(host.get('host_key') or '-'))}</code></li>",
             f"<li>driver: {e(_driver(host))}</li>"]
    findings = _finding_lines(host)
    items.append("<li>findings: " + ("<ul>" + "".join(f"<li>{e(f)}</li>" for f in findings) + "</ul>"
                                     if findings else "none") + "</li>")
    for kind, title in (("validate", "validate (private copy)"), ("activate", "activate (reload)")):
        cmds = _commands(host, kind)
        if cmds and host.get("status") == "would_change":
            items.append(f"<li>{title}:<ul>" + "".join(f"<li><code>{e(c)}</code></li>" for c in cmds) + "</ul></li>")
    resources = host.get("resources") or {}
    if resources:
        items.append("<li>sha256 of every resource read:<ul>" + "".join(
            f"<li><code>{e(p)}</code> {e(d)}</li>" for p, d in resources.items()) + "</ul></li>")
    if host.get("simulation"):
        items.append(f"<li>simulated outside session: {e(host['simulation'])}</li>")
    status = str(host["status"])
    out = [f'<section class="host" id="host-{e(name)}" data-host="{e(name)}">',
           f'<h2>{e(name)} ({e(str(host["address"]))}): <span class="status {e(status)}">{e(status)}</span></h2>']
    if host.get("error"):
        out.append(f'<p class="error">Not approved for change: {e(host["error"])}</p>')
    out.append("<ul>" + "".join(items) + "</ul>")
    if host.get("diff"):
        out.append(f'<pre class="diff" data-host="{e(name)}">{_diff_html(host["diff"])}</pre>')
    out.append("</section>")
    return "\n".join(out)


def _diff_html(diff: str) -> str:
    lines = []
    for line in diff.splitlines():
        kind = ("hunk" if line.startswith("@@") else "" if line.startswith(("+++", "---"))
                else "add" if line.startswith("+") else "del" if line.startswith("-") else "")
        text = html.escape(line)
        lines.append(f'<span class="{kind}">{text}</span>' if kind else text)
    return "\n".join(lines)
