"""Garbled main.cf and master.cf through the Postfix driver's transform pipeline (issue #11): CRLF, a lone CR,
no final newline, bytes that are not UTF-8, tabs, continuation lines (even the `=` on one), very long lines,
a 10 MB file. The policy either gives a file in which every line it does not own is byte-identical, or it
refuses naming the file and line; never a corrupted file, never a traceback.

What Postfix itself reads is computed here independently, from its sources (util/readlline.c: a logical line
is its physical lines joined, comment and blank lines skipped, one that starts with ASCII whitespace
continues; util/split_nameval.c: `name = value` split at the first `=`, ASCII whitespace trimmed; C strings
end at a NUL), so the tests also check that the driver judges the bytes Postfix will read."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from remediate.errors import ConfigError
from remediate.model import Host
from remediate.mta.base import Candidate, Facts
from remediate.mta.postfix.driver import PostfixDriver
from tests.garbled import all_crlf, ending, escaped, files, junk, kept_in_order, physical

GOLDEN = Path(__file__).resolve().parent.parent / "golden"
DRIVER = PostfixDriver()
HOST = Host("mx1", "192.0.2.25")
EXPOSURE = {"open_relay", "anonymous_auth"}
ISSPACE = b" \t\n\r\f\v"
#: the parameters the policies set; `restrict_mynetworks` may set the end of a `mynetworks = $x` chain instead
OWNED = {b"smtpd_relay_restrictions", b"smtpd_recipient_restrictions", b"mynetworks", b"smtpd_sasl_security_options",
         b"smtpd_sasl_tls_security_options", b"smtpd_sasl_auth_enable"}
GARBLED = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                          HealthCheck.function_scoped_fixture,
                                                                          HealthCheck.data_too_large])

# ---------------------------------------------------------------------------------------------------------
# Postfix's own reading, independently (see the module docstring).

def logical(lines: list[bytes]) -> list[list[int]]:
    """Physical line indexes grouped into logical lines, as readlline() does; orphan continuations dropped."""
    groups: list[list[int]] = []
    for index, line in enumerate(lines):
        body = line.removesuffix(b"\n")
        stripped = body.lstrip(ISSPACE)
        if not stripped or stripped.startswith(b"#"):
            continue
        if body[0] in ISSPACE:
            if groups:
                groups[-1].append(index)
            continue
        groups.append([index])
    return groups


def postfix_reads(main_cf: bytes, strict: bool = True) -> dict[bytes, bytes] | None:
    """main.cf's parameters as Postfix sees them (the last one wins); None when Postfix refuses the file
    (unless not `strict`: then the lines it would refuse are left out)."""
    lines = physical(main_cf)
    values: dict[bytes, bytes] = {}
    for group in logical(lines):
        text = b"".join(lines[i].removesuffix(b"\n") for i in group).split(b"\0")[0]
        match = re.fullmatch(rb"([^ \t\n\r\f\v=]+)[ \t\n\r\f\v]*=(.*)", text, re.DOTALL)
        if match is None:
            if strict:
                return None   # "missing '=' after attribute name": postfix refuses to start
            continue
        values[match.group(1)] = match.group(2).strip(ISSPACE)
    return values


def words(value: bytes) -> list[bytes]:
    return [w for w in re.split(rb"[ \t\n\r\f\v]+", value) if w]


def owned(main_cf: bytes) -> set[bytes]:
    """OWNED plus the parameters a `mynetworks = $x` chain of whole-value references passes through."""
    values, names, name = postfix_reads(main_cf, strict=False) or {}, set(OWNED), b"mynetworks"
    while name in values and len(words(values[name])) == 1 and \
            (ref := re.fullmatch(rb"\$(\w+)|\$\{(\w+)\}", words(values[name])[0])) and name not in names - OWNED:
        name = ref.group(1) or ref.group(2)
        names.add(name)
    return names


def unowned(lines: list[bytes], names: set[bytes]) -> tuple[list[bytes], set[int]]:
    """(the lines outside every logical line that sets one of `names`, the indexes of those inside)."""
    inside: set[int] = set()
    for group in logical(lines):
        name = re.match(rb"[^ \t\n\r\f\v=]+", lines[group[0]])
        if name and name.group() in names:
            inside.update(group)
    return [line for i, line in enumerate(lines) if i not in inside], inside


# ---------------------------------------------------------------------------------------------------------
# What a kept file looks like.

def assert_main_cf_kept(before: bytes, after: bytes) -> None:
    """Every line outside the owned parameters is byte-identical and in order; owned lines are written
    `name = value` with a line ending; the final-newline state and an all-CRLF file's endings are kept."""
    names = owned(before)
    old, new = physical(before), physical(after)
    (old_kept, _), (new_kept, new_owned) = unowned(old, names), unowned(new, names)
    assert kept_in_order(old_kept, new_kept, before.endswith(b"\n") or not before), \
        f"unrelated bytes changed:\n{escaped(before)}\n--->\n{escaped(after)}"
    completed = {old[-1] + b"\n", old[-1] + b"\r\n"} if old and not ending(old[-1]) else set()
    for index in sorted(new_owned):
        line = new[index]
        if line not in old and line not in completed:   # not an old line (given the ending it lacked): a new one
            assert re.fullmatch(rb"([a-z_]+) = [^\r\n]*(\r\n|\n)?", line), escaped(line)
            assert line.split(b" ", 1)[0] in names and (ending(line) or index == len(new) - 1), escaped(line)
    if before and after:
        assert after.endswith(b"\n") == before.endswith(b"\n")
    if all_crlf(before):
        assert all_crlf(after), escaped(after)


def subsequence(short: bytes, long: bytes) -> bool:
    rest = iter(long)
    return all(byte in rest for byte in short)


def assert_master_cf_kept(before: bytes, after: bytes) -> None:
    """master.cf only loses words from (or, for a continuation line, whole) lines of entries holding `-o`
    arguments; every other line is byte-identical and in order; line endings and final-newline state kept."""
    old, new = physical(before), physical(after)
    with_o = {i for group in logical(old) if any(b"-o" in old[i] for i in group) for i in group}
    unterminated = not after.endswith(b"\n")

    def body(line: bytes) -> bytes:
        return line[:len(line) - len(ending(line))]

    def same(o: bytes, j: int) -> bool:
        r = new[j]
        return r == o or (j == len(new) - 1 and unterminated and r == body(o))

    def shortened(o: bytes, j: int) -> bool:
        r = new[j]
        return subsequence(body(r), body(o)) and (ending(r) == ending(o) or j == len(new) - 1)

    @cache
    def aligned(i: int, j: int) -> bool:
        """old[i:] becomes new[j:] by keeping lines, shortening lines of entries with -o, or deleting their
        continuation lines."""
        if i == len(old):
            return j == len(new)
        if j == len(new) and unterminated and not old[i].strip(b"\r\n"):
            return aligned(i + 1, j)   # a blank line that became last lost its ending, and so vanished
        if j < len(new) and same(old[i], j) and aligned(i + 1, j + 1):
            return True
        if i not in with_o:
            return False
        if j < len(new) and shortened(old[i], j) and aligned(i + 1, j + 1):
            return True
        return old[i][:1] in (b" ", b"\t", b"\r", b"\f", b"\v") and aligned(i + 1, j)

    assert aligned(0, 0), f"master.cf changed beyond -o arguments:\n{escaped(before)}\n--->\n{escaped(after)}"
    if before and after:
        assert after.endswith(b"\n") == before.endswith(b"\n")
    if all_crlf(before) and after.count(b"\n"):
        assert all_crlf(after), escaped(after)


def candidate(main_cf: bytes, master_cf: bytes = b"", policy: str = "relay-auth",
              mechanisms: str = "") -> Candidate:
    facts = Facts({"main_cf": main_cf, "master_cf": master_cf}, {}, {"sasl_mechanisms": mechanisms})
    return DRIVER.candidate(facts, HOST, DRIVER.playbook.policies[policy])


#: the refusals, each naming the file and line: what Postfix reads cannot be known, or cannot be added to
REFUSALS = re.compile(r"(main|master)\.cf:\d+: (a NUL byte inside a setting: Postfix stops reading .*|"
                      r"\w+ = .*: a '\{' is never closed, so Postfix reads the rest of the value as one word .*)")


def check_pipeline(main_cf: bytes, master_cf: bytes, policy: str, mechanisms: str = "") -> Candidate | None:
    """The whole policy on the files: kept as promised, idempotent, `changed` exact, no exposure left as
    the driver reads it, and Postfix reading what the driver read. None when refused (clearly)."""
    try:
        cand = candidate(main_cf, master_cf, policy, mechanisms)
    except ConfigError as exc:
        assert REFUSALS.fullmatch(str(exc)), exc
        assert b"\0" in main_cf + master_cf or b"{" in main_cf, exc
        return None
    new_main, new_master = cand.data("main_cf"), cand.data("master_cf")
    assert_main_cf_kept(main_cf, new_main)
    assert_master_cf_kept(master_cf, new_master)
    assert set(cand.changed) == {n for n, old, new in (("main_cf", main_cf, new_main), ("master_cf", master_cf,
                                                                                        new_master)) if old != new}
    assert candidate(new_main, new_master, policy, mechanisms).changed == ()
    left = DRIVER.audit(cand.texts, HOST, {"sasl_mechanisms": mechanisms})
    assert not [f for f in left if f.code in EXPOSURE], left
    assert_reads_like_postfix(new_main)
    return cand


def assert_reads_like_postfix(main_cf: bytes) -> None:
    """The driver's effective value of every parameter is the one Postfix reads (up to whitespace)."""
    from remediate.mta.postfix.rules import postfix_effective

    theirs = postfix_reads(main_cf)
    if theirs is None:
        return   # postfix refuses this file; so does validation (`postfix check`)
    ours = postfix_effective(main_cf.decode("utf-8", "surrogateescape"))
    assert {name.encode("utf-8", "surrogateescape"): words(value.encode("utf-8", "surrogateescape"))
            for name, value in ours.items()} == {name: words(value) for name, value in theirs.items()}


# ---------------------------------------------------------------------------------------------------------
# Lines of garbled files.

SETTINGS = [b"mynetworks = 0.0.0.0/0", b"mynetworks = 127.0.0.0/8", b"mynetworks = $my_trusted",
            b"my_trusted = 10.0.0.0/8, 0.0.0.0/0", b"mynetworks_style = subnet", b"compatibility_level = 3.6",
            b"compatibility_level=2", b"smtpd_relay_restrictions = permit", b"smtpd_relay_restrictions =",
            b"smtpd_relay_restrictions = permit_mynetworks,\tpermit_sasl_authenticated, defer_unauth_destination",
            b"smtpd_recipient_restrictions = permit_mynetworks, check_client_access hash:/x, permit",
            b"smtpd_sasl_security_options = noplaintext", b"smtpd_sasl_tls_security_options =",
            b"smtpd_sasl_auth_enable = yes", b"myhostname = mx.example.org", b"alias_maps = hash:/etc/aliases",
            b"mynetworks", b"  = 0.0.0.0/0", b"smtpd_relay_restrictions\t=\tpermit_mx_backup,"]
OWNED_NAMES = sorted(OWNED) + [b"my_trusted", b"myhostname", b"relay_domains"]
WHITESPACE = st.sampled_from([b" ", b"\t", b"  ", b"\t ", b"\f", b"\r "])


def main_cf_lines() -> st.SearchStrategy[bytes]:
    setting = st.builds(lambda name, sep, value: name + sep + value, st.sampled_from(OWNED_NAMES),
                        st.sampled_from([b" = ", b"=", b"\t=\t", b" =  "]), junk())
    continuation = st.builds(lambda space, word: space + word, WHITESPACE,
                             junk() | st.sampled_from([b"0.0.0.0/0", b"permit", b"reject_unauth_destination,"]))
    comment = st.builds(lambda lead, text: lead + b"#" + text, st.sampled_from([b"", b"  ", b"\t"]), junk())
    return st.one_of(st.sampled_from(SETTINGS), setting, continuation, comment, junk(),
                     st.sampled_from([b"", b"  ", b"\t", b"\r"]))


SERVICES = [b"smtp      inet  n       -       y       -       -       smtpd",
            b"submission inet n - y - - smtpd", b"smtps\tinet\tn\t-\ty\t-\t-\tsmtpd",
            b"relay     unix  -       -       y       -       -       smtp", b"pickup unix n - y 60 1 pickup"]
OVERRIDES = [b"-o mynetworks=0.0.0.0/0", b"-o mynetworks=127.0.0.1", b"-o smtpd_relay_restrictions=permit",
             b"-o smtpd_sasl_security_options=", b"-o syslog_name=postfix/$service_name",
             b"-o { smtpd_relay_restrictions = permit_mynetworks, permit }", b"-o", b"mynetworks_style=class",
             b"-osmtpd_relay_restrictions=permit", b"-o { mynetworks =", b"0.0.0.0/0 }"]


def master_cf_lines() -> st.SearchStrategy[bytes]:
    words = st.lists(st.sampled_from(OVERRIDES) | junk(), min_size=1, max_size=3).map(b" ".join)
    service = st.builds(lambda head, args: head + args, st.sampled_from(SERVICES),
                        st.just(b"") | words.map(lambda w: b" " + w))
    continuation = st.builds(lambda space, args: space + args, WHITESPACE, words)
    return st.one_of(service, continuation, st.builds(lambda t: b"#" + t, junk()), junk(),
                     st.sampled_from([b"", b"  "]))


# ---------------------------------------------------------------------------------------------------------
# Properties.

@GARBLED
@given(main_cf=files(main_cf_lines()), master_cf=files(master_cf_lines(), max_lines=8),
       policy=st.sampled_from(["relay-auth", "auth-all"]), mechanisms=st.sampled_from(["", "ANONYMOUS", "PLAIN"]))
def test_garbled_files_keep_every_unrelated_byte_or_are_refused_naming_file_and_line(
        main_cf: bytes, master_cf: bytes, policy: str, mechanisms: str, reliability: Callable[..., Any]) -> None:
    check_pipeline(main_cf, master_cf, policy, mechanisms)
    reliability("hostile input", "main.cf/master.cf garbled (hypothesis, 150 examples): CRLF, a lone CR, no final "
                "newline, bytes not UTF-8, tabs, continuation lines, lines up to 64 KiB",
                "policy applied; every line it does not own byte-identical, owned lines `name = value` with the "
                "file's line ending; idempotent; no exposure left; the driver reads what Postfix reads",
                "no corrupted file (checked byte for byte)", None, 0)


@settings(max_examples=200, deadline=None)
@given(main_cf=st.binary(max_size=300), master_cf=st.binary(max_size=200))
def test_random_bytes_are_transformed_keeping_unrelated_bytes_or_refused_clearly(main_cf: bytes,
                                                                                 master_cf: bytes) -> None:
    check_pipeline(main_cf, master_cf, "relay-auth")


# ---------------------------------------------------------------------------------------------------------
# The cases the properties found, and the ones they must keep finding, spelled out.

def fixed(main_cf: bytes, master_cf: bytes = b"", policy: str = "relay-auth") -> Candidate:
    cand = check_pipeline(main_cf, master_cf, policy)
    assert cand is not None, "refused"
    return cand


def test_a_crlf_file_stays_crlf_and_a_final_lone_cr_is_kept(reliability: Callable[..., Any]) -> None:
    main_cf = GOLDEN.joinpath("debian12-main.cf").read_bytes().replace(b"\n", b"\r\n").replace(
        b"mynetworks = 127.0.0.0/8", b"mynetworks = 0.0.0.0/0") + b"# edited on Windows\r"
    master_cf = b"smtp inet n - y - - smtpd\r\n  -o mynetworks=0.0.0.0/0\r\n#end\r"
    cand = fixed(main_cf, master_cf, "relay-auth")
    assert cand.data("main_cf").endswith(b"\r\n# edited on Windows\r")
    assert b"\r\nmynetworks = 127.0.0.0/8 [::1]/128\r\n" in cand.data("main_cf")
    assert cand.data("master_cf") == b"smtp inet n - y - - smtpd\r\n#end\r"
    reliability("hostile input", "main.cf and master.cf with CRLF endings, the last line ending in a lone CR",
                "fixed; CRLF kept on every line, the new ones included; the final CR kept",
                "byte-identical outside the owned lines", None, 0)


def test_a_line_added_after_an_unterminated_last_line_gets_its_own_ending() -> None:
    cand = fixed(b"compatibility_level = 3.6\r\nsmtpd_relay_restrictions = permit\r\n# no end\r",
                          b"", "relay-auth")
    assert cand.data("main_cf") == (b"compatibility_level = 3.6\r\nsmtpd_relay_restrictions = permit_mynetworks, "
                                    b"permit_sasl_authenticated, reject_unauth_destination\r\n# no end\r")


def test_bytes_that_are_not_utf8_are_kept_in_kept_lines_and_in_rebuilt_values(reliability) -> None:
    main_cf = (b"# ge\xe4ndert von J\xfcrgen (Latin-1)\ncompatibility_level = 3.6\n"
               b"mynetworks = 127.0.0.0/8 \xff\xfe\n"
               b"smtpd_recipient_restrictions = check_recipient_access hash:/etc/postfix/caf\xe9, permit\n")
    cand = fixed(main_cf, b"", "relay-auth")
    assert cand.data("main_cf") == (
        b"# ge\xe4ndert von J\xfcrgen (Latin-1)\ncompatibility_level = 3.6\nmynetworks = 127.0.0.0/8 [::1]/128\n"
        b"smtpd_recipient_restrictions = permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination, "
        b"check_recipient_access hash:/etc/postfix/caf\xe9, permit\n")
    reliability("hostile input", "main.cf with bytes that are not UTF-8 (a Latin-1 comment, a value to rebuild)",
                "fixed; each such byte written back as it was (no U+FFFD), in kept lines and in rebuilt values",
                "byte-identical outside the owned lines", None, 0)


def test_an_equals_sign_on_a_continuation_line_is_read_as_postfix_reads_it() -> None:
    main_cf = b"compatibility_level = 3.6\nmynetworks\n  = 0.0.0.0/0\n"
    found = DRIVER.audit({"main_cf": main_cf.decode(), "master_cf": ""}, HOST)
    assert [(f.code, f.parameter, f.line) for f in found] == [("open_relay", "mynetworks", 2)]
    assert fixed(main_cf).data("main_cf") == \
        b"compatibility_level = 3.6\nmynetworks = 127.0.0.0/8 [::1]/128\n"


@pytest.mark.parametrize(("file", "data", "line"), [
    ("main_cf", b"compatibility_level = 3.6\nsmtpd_relay_restrictions = permit\0, reject_unauth_destination\n", 2),
    ("main_cf", b"mynetworks = 127.0.0.1,\n\t10.0.0.0/8\0 0.0.0.0/0\n", 2),
    ("master_cf", b"smtp inet n - y - - smtpd\n  -o smtpd_relay_restrictions=permit\0,reject\n", 2),
])
def test_a_nul_byte_inside_a_setting_is_refused_naming_file_and_line(file, data, line, reliability) -> None:
    files = {"main_cf": b"compatibility_level = 3.6\n", "master_cf": b"", file: data}
    with pytest.raises(ConfigError) as refused:
        candidate(files["main_cf"], files["master_cf"])
    name = file.replace("_", ".")
    assert str(refused.value).startswith(f"{name}:{line}: a NUL byte inside a setting: Postfix stops reading")
    with pytest.raises(ConfigError):
        DRIVER.audit({k: v.decode() for k, v in files.items()}, HOST)
    setting = data.split(b"\n")[line - 1].decode().replace("\0", "\\0").strip()
    reliability("hostile input", f"a NUL byte inside a {name} setting, `{setting}` (Postfix reads up to it only)",
                f"refused: {str(refused.value)[:70]}... (scan: noted, verdict from the probe alone)",
                "nothing written", None, 0)


def test_a_nul_byte_in_a_comment_is_harmless_and_kept() -> None:
    cand = fixed(b"# \0 stray\ncompatibility_level = 3.6\nmynetworks = 0.0.0.0/0\n", b"", "relay-auth")
    assert cand.data("main_cf").startswith(b"# \0 stray\n")


def test_very_long_lines_are_replaced_or_kept_whole() -> None:
    value = b"10.0.0.0/8, " * 90_000                        # a 1 MB mynetworks
    comment = b"# " + b"\xff\xe9x" * 350_000                  # a 1 MB comment, not UTF-8
    main_cf = b"compatibility_level = 3.6\n" + comment + b"\nmynetworks = " + value + b"\n"
    cand = fixed(main_cf, b"", "relay-auth")
    assert cand.data("main_cf") == b"compatibility_level = 3.6\n" + comment + b"\nmynetworks = 127.0.0.0/8 [::1]/128\n"


def test_a_10_megabyte_main_cf_is_fixed_in_bounded_time_keeping_every_other_byte(reliability) -> None:
    debian = GOLDEN.joinpath("debian12-main.cf").read_bytes()
    filler = b"".join(b"# %06d comment caf\xc3\xa9 \xff\xfe\tand a tab%s\r\nparam_%d = value %d, \xe9\n" % (
        i, b"." * (i % 97), i, i) for i in range(89_000))
    main_cf = debian + filler + b"mynetworks = 0.0.0.0/0\nsmtpd_relay_restrictions = permit\n"
    assert len(main_cf) >= 10_000_000
    started = time.monotonic()
    cand = candidate(main_cf)
    seconds = time.monotonic() - started
    after = cand.data("main_cf")
    assert after == debian + filler + (b"mynetworks = 127.0.0.0/8 [::1]/128\nsmtpd_relay_restrictions = "
                                       b"permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination\n")
    assert seconds < 60, seconds
    reliability("hostile input", "a 10 MB main.cf (178,000 lines, CRLF and LF mixed, bytes not UTF-8)",
                "fixed: the two offending lines replaced", "every other byte identical", seconds, 0)


def test_a_value_whose_brace_is_never_closed_is_refused_not_appended_to_on_every_run(reliability) -> None:
    main_cf = b"compatibility_level = 3.6\nsmtpd_sasl_security_options = noplaintext {\n"
    with pytest.raises(ConfigError) as refused:
        candidate(main_cf)
    assert str(refused.value).startswith("main.cf:2: smtpd_sasl_security_options = 'noplaintext {': a '{' is "
                                         "never closed")
    reliability("hostile input", "a main.cf list to extend whose '{' is never closed (Postfix reads the rest as "
                "one word)", "refused naming the file, line and value (an append would be swallowed, and repeated "
                "on every run)", "nothing written", None, 0)


def test_a_change_to_a_file_with_bytes_not_utf8_is_shown_everywhere_without_an_encoding_error(tmp_path, reliability):
    """The diff, the findings, the report and the plan (JSON, Markdown, HTML, on a strict UTF-8 stdout and to a
    file) show such a byte as \\xNN; writing them never fails (it did: UnicodeEncodeError, a traceback)."""
    import io
    import json
    import os

    from rich.console import Console

    from remediate import planfile, report
    from remediate.model import HostPlan, HostResult, RunResult, Status
    from tests.conftest import run_cli

    facts = Facts({"main_cf": b"# ge\xe4ndert\nmynetworks = 0.0.0.0/0 \xff\n", "master_cf": b""}, {},
                  {"sasl_mechanisms": ""})
    cand = DRIVER.candidate(facts, HOST, DRIVER.playbook.policies["relay-auth"])
    assert cand.data("main_cf").startswith(b"# ge\xe4ndert\n")          # the file itself keeps the byte
    run = RunResult("20261128T210317Z-d4da", "plan")
    run.hosts = [HostResult("mx1", "192.0.2.25", Status.WOULD_CHANGE, DRIVER.audit(facts.texts(), HOST),
                            changed=True, diff=cand.diff, plan=HostPlan(
                                None, "postfix", "postfix@1", "cd" * 32, (("/etc/postfix/main.cf", "ab" * 32),),
                                (("/etc/postfix/main.cf", "01" * 32),)))]
    strict = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="strict")
    report.render(run, Console(file=strict, width=200), show_diffs=True)
    strict.flush()
    shown = strict.buffer.getvalue().decode()   # type: ignore[attr-defined]
    assert "# ge\\xe4ndert" in shown and "-mynetworks = 0.0.0.0/0 \\xff" in shown
    (tmp_path / "inventory.yaml").write_text("hosts: {}\n")
    planfile.write_plan(planfile.seal(planfile.document(run, tmp_path / "inventory.yaml")), tmp_path / "plan.json")
    assert "-mynetworks = 0.0.0.0/0 \\\\xff" in (tmp_path / "plan.json").read_text()
    assert json.loads((tmp_path / "plan.json").read_text())["hosts"][0]["findings_before"]
    for fmt in ("md", "html"):
        to_file = run_cli("plan", "--from", "plan.json", "--format", fmt, "-o", f"plan.{fmt}", cwd=tmp_path)
        to_stdout = run_cli("plan", "--from", "plan.json", "--format", fmt, cwd=tmp_path,
                            env={"PYTHONIOENCODING": "utf-8:strict", "LC_ALL": os.environ.get("LC_ALL", "C.UTF-8")})
        assert to_file.returncode == 0 and to_stdout.returncode == 0, to_file.stderr + to_stdout.stderr
        assert "\\xff" in (tmp_path / f"plan.{fmt}").read_text() and "\\xff" in to_stdout.stdout
    reliability("hostile input", "a change to a main.cf holding bytes that are not UTF-8: diff, findings, report, "
                "plan JSON, Markdown and HTML (a file, and a strict UTF-8 stdout)",
                "each such byte shown as \\xNN; no encoding error (was: UnicodeEncodeError traceback)",
                "the file itself keeps the byte", None, 0)


def test_a_master_cf_service_named_with_digits_postfix_does_not_take_is_no_port_to_probe() -> None:
    master_cf = "²  inet n - y - - smtpd\n٢٥ inet n - y - - smtpd\n99999 inet n - y - - smtpd\n".encode()
    context = DRIVER.probe_context(HOST, Facts({"main_cf": b"", "master_cf": master_cf}, {}, {}))
    assert context.services == ()   # Postfix listens on none of them (not an ASCII port number in 1-65535)


def test_a_nul_byte_in_master_cf_still_lets_scan_find_the_services_to_probe() -> None:
    """The refusal is for judging and editing; the scan notes it and probes every service all the same."""
    master_cf = b"submission inet n - y - - smtpd\n  -o smtpd_relay_restrictions=permit\0\n"
    context = DRIVER.probe_context(HOST, Facts({"main_cf": b"", "master_cf": master_cf}, {}, {}))
    assert [(s.name, s.port) for s in context.services] == [("submission", 587)]


def test_the_diff_splits_lines_where_postfix_does_only_at_newlines() -> None:
    """A form feed or U+2028 inside a comment is part of its line to Postfix; the diff shows that line whole,
    and applying the diff's lines gives the candidate back."""
    main_cf = "# page one\fpage two \u2028 still one line\nmynetworks = 0.0.0.0/0\n".encode()
    facts = Facts({"main_cf": main_cf, "master_cf": b""}, {}, {})
    cand = DRIVER.candidate(facts, HOST, DRIVER.playbook.policies["relay-auth"])
    assert "main_cf" in cand.changed
    context = [line for line in cand.diff.splitlines() if line.startswith(" ")]
    assert " # page one\fpage two \u2028 still one line" in cand.diff.split("\n")
    assert all("\f" not in line or line.startswith(" # page one") for line in context)
