#!/usr/bin/env python3
"""The closing summary of scripts/test.sh and .ci/run (called by scripts/lib/steps.sh).

Reads the report directory the steps wrote: steps.tsv (number, exit code, seconds, name), NN.log
(each step's output) and NN-junit.xml (a nextest step's report). Prints each step's wall time,
the tests that passed only on their retry (FLAKY, also written to flaky.txt), and for a failed
step what broke: each failed test with its assertion message and the last lines of its output,
or a build's first compiler error, or the end of the step's log. The last lines are the ones
someone reading only the end of a CI log needs.

usage: summary.py REPORT_DIR EXIT_CODE TOTAL_SECONDS
"""

import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

OUTPUT_TAIL = 15
LOG_TAIL = 30


def steps(report):
    rows = []
    path = report / "steps.tsv"
    if not path.exists():
        return rows
    for line in path.read_text(errors="replace").splitlines():
        parts = line.split("\t", 3)
        if len(parts) == 4:
            rows.append((parts[0], int(parts[1]), int(parts[2]), parts[3]))
    return rows


def clock(seconds):
    return f"{seconds // 60}:{seconds % 60:02d}"


def testcases(junit):
    try:
        root = ET.parse(junit).getroot()
    except (ET.ParseError, OSError):
        return []
    return list(root.iter("testcase"))


def case_name(case):
    cls = case.get("classname", "")
    return f"{cls} {case.get('name', '')}".strip()


def case_output(case):
    text = ""
    for tag in ("system-out", "system-err"):
        for el in case.findall(tag):
            text += el.text or ""
    for tag in ("failure", "error", "rerunFailure", "flakyFailure"):
        for el in case.findall(tag):
            for sub in ("system-out", "system-err"):
                for s in el.findall(sub):
                    text += s.text or ""
            text += el.text or ""
    return text


def panic_message(output):
    """The panic line and the assertion text under it, without the backtrace."""
    lines = output.splitlines()
    for i, line in enumerate(lines):
        if "panicked at" in line:
            out = [line.strip()]
            for more in lines[i + 1 : i + 12]:
                if more.startswith(("stack backtrace:", "note: ")) or not more.strip():
                    break
                out.append(more.rstrip()[:400])
            return out
    return []


# libtest's own lines, which say nothing the summary does not.
LIBTEST_CHATTER = re.compile(
    r"^(running \d+ tests?|test .* \.\.\. \w+|failures:|test result: .*|\s+[\w:]+)$"
)


def clean_tail(output, n, skip=()):
    lines = [l.rstrip()[:400] for l in output.splitlines()]
    # The backtrace says where, the message already said what: keep the lines before it.
    for i, l in enumerate(lines):
        if l.startswith("stack backtrace:"):
            lines = lines[:i]
            break
    lines = [l for l in lines if l.strip() and not LIBTEST_CHATTER.match(l)]
    lines = [l for l in lines if l.strip() not in skip]
    return lines[-n:]


def failed_tests(junit):
    out = []
    for case in testcases(junit):
        if case.find("failure") is None and case.find("error") is None:
            continue
        output = case_output(case)
        failure = case.find("failure")
        if failure is None:
            failure = case.find("error")
        message = panic_message(output) or [
            (failure.get("message") or failure.get("type") or "failed").strip()
        ]
        shown = {line.strip() for line in message}
        out.append((case_name(case), message, clean_tail(output, OUTPUT_TAIL, shown)))
    return out


def flaky_tests(junit):
    out = []
    for case in testcases(junit):
        flaky = case.findall("flakyFailure")
        if flaky and case.find("failure") is None:
            output = case_output(case)
            message = panic_message(output) or [
                (flaky[0].get("message") or flaky[0].get("type") or "failed once").strip()
            ]
            out.append((case_name(case), message))
    return out


COMPILER_ERROR = re.compile(r"^error(\[E\d+\])?: ")
NOT_THE_CAUSE = re.compile(r"^error: (could not compile|test failed|aborting due to|Recipe)")


def first_compiler_error(log):
    lines = log.splitlines()
    for i, line in enumerate(lines):
        if COMPILER_ERROR.match(line) and not NOT_THE_CAUSE.match(line):
            block = [line]
            for more in lines[i + 1 : i + 25]:
                if not more.strip():
                    break
                block.append(more.rstrip())
            return block
    return []


def libtest_failures(log):
    """`cargo test` output: each `---- name stdout ----` block's panic message."""
    out = []
    blocks = re.split(r"^---- (.+?) stdout ----$", log, flags=re.M)
    for name, body in zip(blocks[1::2], blocks[2::2]):
        message = panic_message(body)
        shown = {line.strip() for line in message}
        out.append((name, message, clean_tail(body, OUTPUT_TAIL, shown)))
    return out


def main():
    report = Path(sys.argv[1])
    code = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    total = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    rows = steps(report)

    flaky = []
    for junit in sorted(report.glob("*-junit.xml")):
        flaky += flaky_tests(junit)
    (report / "flaky.txt").write_text(
        "".join(f"{name}\t{' / '.join(msg)[:600]}\n" for name, msg in flaky)
    )

    print("\n==> summary")
    for n, rc, secs, name in rows:
        verdict = "ok" if rc == 0 else f"FAILED (exit {rc})"
        print(f"  {clock(secs):>6}  {verdict:<16} {name}")
    print(f"  {clock(total):>6}  total")
    disk = report / "disk.txt"
    if disk.exists():
        for line in disk.read_text(errors="replace").splitlines()[-2:]:
            print(f"  {line}")
    for name, msg in flaky:
        print(f"FLAKY (failed, then passed on its retry): {name}")
        for line in msg[:4]:
            print(f"    {line}")
    if flaky:
        print(f"  (listed in {report / 'flaky.txt'})")

    failed = [r for r in rows if r[1] != 0]
    if not failed:
        if code != 0:
            print(f"FAILED (exit {code}) outside a step: see the lines above the summary")
        else:
            print("all steps passed")
        return
    n, rc, _, name = failed[0]
    log_path = report / f"{n}.log"
    log = log_path.read_text(errors="replace") if log_path.exists() else ""
    print(f"FAILED: step \"{name}\" (exit {rc}); its whole output: {log_path}")

    junit = report / f"{n}-junit.xml"
    tests = failed_tests(junit) if junit.exists() else []
    if not tests:
        tests = libtest_failures(log)
    compiler = first_compiler_error(log)
    if tests:
        for test, message, tail in tests[:5]:
            print(f"failed test: {test}")
            for line in message:
                print(f"    {line}")
            if tail:
                print("  its last lines of output:")
            for line in tail:
                print(f"    {line}")
        names = ", ".join(t[0] for t in tests)
        print(f"FAILED TESTS ({len(tests)}): {names}")
    elif compiler:
        print("first compiler error:")
        for line in compiler:
            print(f"    {line}")
    else:
        print("the step's last lines:")
        for line in clean_tail(log, LOG_TAIL):
            print(f"    {line}")
    print(f"FAILED: step \"{name}\" (exit {rc})")


if __name__ == "__main__":
    main()
