"""The shipped dialplan (dialplan/**): structural lint, the lint's own teeth, and behaviour.

No Asterisk runs here (Debian 12 has no package), so ``tests/dialplan_lint.py`` checks the files the
way Asterisk's parser reads them, and its ``MiniPbx`` runs the Gosub library and the examples on a
simulated channel (AGI replaced by a Python function) to check the branches do what they say.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from typing import Optional

import pytest

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("dialplan_lint", HERE / "dialplan_lint.py")
assert _spec is not None and _spec.loader is not None
lint = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("dialplan_lint", lint)
_spec.loader.exec_module(lint)

DIALPLAN = lint.DIALPLAN_DIR
LIBRARY = DIALPLAN / "extensions_vicirec.conf"
EXAMPLES = DIALPLAN / "examples"


def shipped_texts() -> dict[str, str]:
    return lint.collect([DIALPLAN])


def lint_snippet(snippet: str, name: str = "snippet.conf", with_library: bool = True) -> list:
    """Lint ``snippet`` together with the shipped library; return only the snippet's issues."""
    texts = {str(LIBRARY): LIBRARY.read_text(encoding="utf-8")} if with_library else {}
    texts[name] = snippet
    return [i for i in lint.lint_texts(texts) if i.path == name]


def codes(issues: list) -> set[str]:
    return {i.code for i in issues}


# ---------------------------------------------------------------------------------------------
# the shipped files
# ---------------------------------------------------------------------------------------------


def test_shipped_files_exist() -> None:
    names = {p.name for p in EXAMPLES.iterdir()}
    assert LIBRARY.is_file()
    assert {
        "vicirec-example-consent.conf",
        "vicirec-example-pci.conf",
        "vicirec-example-status.conf",
        "vicirec-example-feature.conf",
        "features_vicirec.conf",
        "vicirec-example-confbridge.conf",
        "confbridge_vicirec.conf",
    } <= names


def test_shipped_files_pass_the_lint() -> None:
    issues = lint.lint_paths([DIALPLAN])
    assert issues == [], "\n".join(map(str, issues))


def test_lint_cli_exit_codes(tmp_path: Path) -> None:
    ok = subprocess.run([sys.executable, str(HERE / "dialplan_lint.py"), str(DIALPLAN)],
                        check=False, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "0 issue(s)" in ok.stdout
    bad = tmp_path / "bad.conf"
    bad.write_text("[x]\nexten => s,1,Macro(old)\n", encoding="utf-8")
    res = subprocess.run([sys.executable, str(HERE / "dialplan_lint.py"), str(bad)],
                         check=False, capture_output=True, text=True, timeout=60)
    assert res.returncode == 1
    assert "MACRO" in res.stdout


def test_library_is_one_context_with_the_public_extensions() -> None:
    files = lint.parse_files({str(LIBRARY): LIBRARY.read_text(encoding="utf-8")})
    contexts = {c.name: c for f in files for c in f.contexts}
    assert list(contexts) == ["vicirec"]
    assert {"start", "stop", "status"} <= set(contexts["vicirec"].extensions)


def test_example_contexts_are_prefixed_and_distinct() -> None:
    seen: dict[str, str] = {}
    for path in sorted(EXAMPLES.glob("*.conf")):
        for f in lint.parse_files({str(path): path.read_text(encoding="utf-8")}):
            for c in f.contexts:
                assert c.name.startswith("vicirec-example-"), f"{path.name}: [{c.name}]"
                assert c.name not in seen, f"[{c.name}] in {path.name} and {seen[c.name]}"
                seen[c.name] = path.name
    assert len(seen) >= 5


def test_no_macro_no_catch_all_and_same_lines_everywhere() -> None:
    for path, text in shipped_texts().items():
        code = "\n".join(line.split(";", 1)[0] for line in text.splitlines())
        assert not re.search(r"\bMacro\w*\(", code, re.IGNORECASE), path
        assert not re.search(r"exten\s*=>\s*_", code), path
        # every continuation priority is written as `same =>` (except in a copy of what VICIdial
        # itself generates, which writes `exten => X,n`)
        if not lint.VICIDIAL_GENERATED_RE.search(text):
            assert not re.search(r"exten\s*=>\s*[^,]+,\s*n\b", code), path


def test_every_agi_argument_after_the_action_is_quoted_or_literal() -> None:
    text = LIBRARY.read_text(encoding="utf-8")
    calls = re.findall(r"AGI\((.*)\)\s*$", text, re.MULTILINE)
    assert len(calls) == 6  # START / STOP / STATUS, each with and without agent=
    for call in calls:
        for arg in lint.split_args(call, remove_quotes=False)[2:]:
            assert "${" not in arg or (arg.startswith('"') and arg.endswith('"')), call


# ---------------------------------------------------------------------------------------------
# the checker can fail: one broken snippet per defect
# ---------------------------------------------------------------------------------------------

BROKEN = {
    "MACRO": "[a]\nexten => s,1,Macro(dial,1000)\n same => n,Hangup()\n",
    "MACRO-context": "[macro-old]\nexten => s,1,NoOp()\n",
    "DEPRECATED": "[a]\nexten => s,1,Monitor(wav,file)\n same => n,Hangup()\n",
    "SAME_BEFORE_EXTEN": "[a]\n same => n,NoOp()\n",
    "EXTEN_CONTINUATION": "[a]\nexten => s,1,NoOp()\nexten => s,n,Hangup()\n",
    "DUP_PRIORITY": "[a]\nexten => s,1,NoOp()\nexten => s,1,Hangup()\n",
    "DUP_LABEL": "[a]\nexten => s,1(x),NoOp()\n same => n(x),Hangup()\n",
    "RESERVED_CONTEXT": "[globals]\nFOO=1\n",
    "CATCH_ALL": "[a]\nexten => _X.,1,NoOp()\n",
    "BAD_TARGET-context": "[a]\nexten => s,1,Goto(nowhere,s,1)\n",
    "BAD_TARGET-exten": "[a]\nexten => s,1,Goto(a,missing,1)\n",
    "BAD_TARGET-label": '[a]\nexten => s,1,GotoIf($["${X}" = "1"]?yes:no)\n same => n(yes),Hangup()\n',
    "BAD_TARGET-gosub": "[a]\nexten => s,1,Gosub(vicirec,begin,1(_X))\n same => n,Hangup()\n",
    "BAD_TARGET-library-label": "[a]\nexten => s,1,Gosub(vicirec,start,nolabel(_X))\n same => n,Hangup()\n",
    "BAD_TARGET-predial": "[a]\nexten => s,1,Dial(PJSIP/1000,30,b(nosuch^s^1))\n same => n,Hangup()\n",
    "BAD_TARGET-hangup-handler": "[a]\nexten => s,1,Set(CHANNEL(hangup_handler_push)=gone,s,1)\n",
    "BAD_TARGET-include": "[a]\ninclude => not-shipped\nexten => s,1,NoOp()\n",
    "BAD_TARGET-execif": '[a]\nexten => s,1,ExecIf($["${X}" = "1"]?Gosub(nope,s,1))\n same => n,Hangup()\n',
    "DYNAMIC_TARGET": "[a]\nexten => s,1,Goto(${DEST},s,1)\n",
    "UNBALANCED-paren": "[a]\nexten => s,1,Set(X=${LEN(abc)})\n same => n,NoOp((x)\n",
    "UNBALANCED-brace": "[a]\nexten => s,1,NoOp(${VICIREC_RESULT)\n",
    "UNBALANCED-bracket": "[a]\nexten => s,1,Set(X=$[1 + 2)\n",
    "UNQUOTED_COMPARE": "[a]\nexten => s,1,GotoIf($[${VICIREC_RESULT} = OK]?s,2)\n same => n,Hangup()\n",
    "UNQUOTED_COMPARE-half": (
        '[a]\nexten => s,1,GotoIf($["${A}" = "1" & ${B} != 0]?s,2)\n same => n,Hangup()\n'
    ),
    "UNQUOTED_COMPARE-in-IF": "[a]\nexten => s,1,Set(X=${IF($[${Y} = 1]?a:b)})\n",
    "CALLERID_UNQUOTED-agi": "[a]\nexten => s,1,AGI(vicirec.agi,START,${CALLERID(name)})\n",
    "CALLERID_UNQUOTED-gosub": (
        "[a]\nexten => s,1,Gosub(vicirec,start,1(${CALLERID(num)}))\n same => n,Hangup()\n"
    ),
    "CALLERID_UNQUOTED-gosub-quoted": (
        '[a]\nexten => s,1,Gosub(vicirec,start,1("${CALLERID(name)}"))\n same => n,Hangup()\n'
    ),
    "AGI_UNQUOTED_VAR": "[a]\nexten => s,1,AGI(vicirec.agi,START,${STAGE},confirm=3)\n",
    "AGI_TARGET": "[a]\nexten => s,1,AGI(other.agi,START)\n",
    "AGI_ACTION": "[a]\nexten => s,1,AGI(vicirec.agi,PAUSE)\n",
    "AGI_ACTION-missing": "[a]\nexten => s,1,AGI(vicirec.agi)\n",
    "AGI_ACTION-variable": '[a]\nexten => s,1,AGI(vicirec.agi,"${ACT}")\n',
    "AGI_OPTION": "[a]\nexten => s,1,AGI(vicirec.agi,START,_X,timeout=3)\n",
    "AGI_OPTION-confirm": "[a]\nexten => s,1,AGI(vicirec.agi,STOP,confirm=soon)\n",
    "AGI_OPTION-twice": "[a]\nexten => s,1,AGI(vicirec.agi,STOP,confirm=1,confirm=2)\n",
    "AGI_STAGE-on-stop": "[a]\nexten => s,1,AGI(vicirec.agi,STOP,_PCI)\n",
    "AGI_STAGE-long": "[a]\nexten => s,1,AGI(vicirec.agi,START,_THIS_IS_FAR_TOO_LONG)\n",
    "AGI_STAGE-chars": "[a]\nexten => s,1,AGI(vicirec.agi,START,a|b)\n",
    "AGI_STAGE-keyword": "[a]\nexten => s,1,AGI(vicirec.agi,START,_RESTART)\n",
    "NO_RETURN": "[a]\nexten => s,1,Gosub(a-sub,s,1)\n same => n,Hangup()\n[a-sub]\nexten => s,1,Hangup()\n",
    "FALLS_OFF_END": (
        "[a]\nexten => s,1,Gosub(a-sub,s,1)\n same => n,Hangup()\n"
        '[a-sub]\nexten => s,1,GotoIf($["${X}" = "1"]?out)\n same => n,NoOp(fall)\n'
        " same => n(out),Return()\nexten => t,1,NoOp()\n"
        "[b]\nexten => s,1,Gosub(a-sub,s,1)\n same => n,Goto(a-sub,t,1)\n"
        "[c]\nexten => s,1,Gosub(c-sub,s,1)\n same => n,Hangup()\n"
        '[c-sub]\nexten => s,1,GotoIf($["${X}" = "1"]?t,1)\n same => n,Return()\nexten => t,1,NoOp()\n'
    ),
    "SYNTAX-old-app-syntax": "[a]\nexten => s,1,NoOp,hello\n",
    "SYNTAX-outside-context": "exten => s,1,NoOp()\n",
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_lint_catches(case: str) -> None:
    expected = case.split("-", maxsplit=1)[0]
    issues = lint_snippet(BROKEN[case])
    assert expected in codes(issues), f"{case}: got {[str(i) for i in issues]}"


BROKEN_FEATURES = {
    "FEATURE_PEER": "vr => *81,peer,Gosub(vicirec,status,1())\n",
    "FEATURE_SYNTAX-missing": "vr => *81,self\n",
    "FEATURE_SYNTAX-activate": "vr => *81,both,Gosub(vicirec,status,1())\n",
    "FEATURE_SYNTAX-dtmf": "vr => x1,self,Gosub(vicirec,status,1())\n",
    "BAD_TARGET": "vr => *81,self,Gosub(vicirec-gone,s,1)\n",
    "AGI_ACTION": "vr => *81,self,AGI(vicirec.agi,RESUME)\n",
    "CALLERID_UNQUOTED": "vr => *81,self,AGI(vicirec.agi,START,${CALLERID(name)})\n",
}


@pytest.mark.parametrize("case", sorted(BROKEN_FEATURES))
def test_lint_catches_in_applicationmap(case: str) -> None:
    expected = case.split("-", maxsplit=1)[0]
    issues = lint_snippet(BROKEN_FEATURES[case], name="features_snippet.conf")
    assert expected in codes(issues), f"{case}: got {[str(i) for i in issues]}"


def test_lint_catches_return_in_a_confbridge_dialplan_exec_target() -> None:
    texts = {
        str(LIBRARY): LIBRARY.read_text(encoding="utf-8"),
        "menu.conf": "[a]\nexten => k,1,Gosub(vicirec,status,1())\n same => n,Return()\n",
        "confbridge_snippet.conf": "[m]\ntype=menu\n*5=dialplan_exec(a,k,1)\n*6=dialplan_exec(a,nope,1)\n"
                                   "*7=dialplan_exec(a,k)\n",
    }
    found = codes(lint.lint_texts(texts))
    assert {"RETURN_WITHOUT_GOSUB", "BAD_TARGET", "MENU_SYNTAX"} <= found


def test_lint_catches_duplicate_contexts_and_missing_includes() -> None:
    texts = {
        "one.conf": "[same-name]\nexten => s,1,NoOp()\n",
        "two.conf": "[same-name]\nexten => t,1,NoOp()\n#include not-there.conf\n",
    }
    found = codes(lint.lint_texts(texts))
    assert {"DUP_CONTEXT", "INCLUDE_MISSING"} <= found


GOOD = {
    "quoted compare": '[a]\nexten => s,1,GotoIf($["${VICIREC_RESULT}" = "OK"]?s,2)\n same => n,Hangup()\n',
    "arithmetic needs no quotes": "[a]\nexten => s,1,Set(N=$[${N} + 1])\n",
    "FILTER protects Gosub": (
        "[a]\nexten => s,1,Gosub(vicirec,start,1(,,${FILTER(0-9,${CALLERID(num)})}))\n same => n,Hangup()\n"
    ),
    "quoted CALLERID in AGI": '[a]\nexten => s,1,AGI(vicirec.agi,START,_X,"agent=${CALLERID(num)}")\n',
    "declared external context": (
        "; lint: external-context from-vicidial-park\n"
        "[a]\nexten => s,1,Goto(from-vicidial-park,s,1)\n"
    ),
    "comments and escaped semicolon": "[a] ; ctx\nexten => s,1,NoOp(a\\;b) ; say\n;-- block\nMacro( --;\n",
    "fastagi target": "[a]\nexten => s,1,AGI(agi://127.0.0.1:4573/vicirec,STATUS)\n",
    "empty options": '[a]\nexten => s,1,AGI(vicirec.agi,START,"","confirm=")\n',
}


@pytest.mark.parametrize("case", sorted(GOOD))
def test_lint_accepts(case: str) -> None:
    issues = lint_snippet(GOOD[case])
    assert issues == [], f"{case}: {[str(i) for i in issues]}"


def test_split_args_follows_asterisk() -> None:
    # args.conf transcript: quotes group and are removed, \, escapes, empty args are kept
    assert lint.split_args('a,"b,c",d\\,e,,f"g"h') == ["a", "b,c", "d,e", "", "fgh"]
    assert lint.split_args('x(1,2),"q"', remove_quotes=False) == ["x(1,2)", '"q"']


# ---------------------------------------------------------------------------------------------
# behaviour: the library and the examples on a simulated channel
# ---------------------------------------------------------------------------------------------


class FakeAgi:
    """Stands in for vicirec.agi: records argv, answers with the given variables."""

    def __init__(self, *answers: Optional[dict[str, str]]) -> None:
        self.answers = list(answers)
        self.calls: list[list[str]] = []

    def __call__(self, argv: list[str], channel: dict[str, str]) -> Optional[dict[str, str]]:
        self.calls.append(argv)
        answer = self.answers.pop(0) if self.answers else {"VICIREC_RESULT": "OK"}
        if answer is None or "AGISTATUS" in answer:  # did not report (AGISTATUS: what instead)
            return answer
        full = {"VICIREC_ERROR": "", "VICIREC_MESSAGE": "", "VICIREC_ACTION": argv[1]}
        full.update(answer)
        return full


def pbx(agi: Optional[FakeAgi] = None, **kwargs) -> lint.MiniPbx:
    return lint.MiniPbx(lint.parse_files(shipped_texts()), agi=agi, **kwargs)


OK_REC = {"VICIREC_RESULT": "OK", "VICIREC_RECORDING": "1"}
DAEMON = "agi://127.0.0.1:4573/vicirec"  # the library's default target
OK_NOT_REC = {"VICIREC_RESULT": "OK", "VICIREC_RECORDING": "0"}


@pytest.mark.parametrize(
    ("exten", "args", "argv"),
    [
        ("start", ["_CONSENT", "3"], [DAEMON, "START", "_CONSENT", "confirm=3"]),
        ("start", ["_CONSENT", "3", "1000"], [DAEMON, "START", "_CONSENT", "confirm=3", "agent=1000"]),
        ("start", [], [DAEMON, "START", "", "confirm="]),
        ("start", ["", "", "1000"], [DAEMON, "START", "", "confirm=", "agent=1000"]),
        ("stop", ["3"], [DAEMON, "STOP", "confirm=3"]),
        ("stop", ["", "1001"], [DAEMON, "STOP", "confirm=", "agent=1001"]),
        ("status", [], [DAEMON, "STATUS"]),
        ("status", ["1002"], [DAEMON, "STATUS", "agent=1002"]),
    ],
)
def test_library_passes_exactly_these_agi_arguments(exten: str, args: list[str], argv: list[str]) -> None:
    agi = FakeAgi(OK_REC)
    p = pbx(agi)
    p.gosub("vicirec", exten, "1", args)
    assert agi.calls == [argv]
    assert p.vars["VICIREC_RESULT"] == "OK"


def test_a_comma_inside_a_value_stays_one_agi_argument() -> None:
    agi = FakeAgi(OK_REC)
    p = pbx(agi)
    p.vars["AGENT_USER"] = "10,01"
    p.gosub("vicirec", "status", "1", [p.substitute("${AGENT_USER}")])
    assert agi.calls == [[DAEMON, "STATUS", "agent=10,01"]]


def test_vicirec_agi_global_selects_fastagi_and_keeps_the_url_intact() -> None:
    agi = FakeAgi(OK_REC)
    p = pbx(agi, globals_={"VICIREC_AGI": "agi://127.0.0.1:4573/vicirec"})
    p.gosub("vicirec", "start", "1", ["_CONSENT", "3"])
    assert agi.calls[0][0] == "agi://127.0.0.1:4573/vicirec"
    # a channel variable of the same name overrides the global
    p.vars["VICIREC_AGI"] = "/var/lib/asterisk/agi-bin/vicirec.agi"
    p.gosub("vicirec", "status", "1", [])
    assert agi.calls[1][0] == "/var/lib/asterisk/agi-bin/vicirec.agi"


@pytest.mark.parametrize(("agistatus", "error"), [("NOTFOUND", "CONFIG"), ("FAILURE", "INTERNAL")])
def test_agi_that_reports_nothing_still_yields_error(agistatus: str, error: str) -> None:
    p = pbx(FakeAgi(None), agi_status=agistatus, globals_={"VICIREC_AGI": "vicirec.agi"})
    p.vars.update({"VICIREC_RESULT": "OK", "VICIREC_RECORDING": "1"})  # stale, from an earlier call
    p.gosub("vicirec", "stop", "1", ["3"])
    assert p.vars["VICIREC_RESULT"] == "ERROR"
    assert p.vars["VICIREC_ERROR"] == error
    assert p.vars["VICIREC_RECORDING"] == ""
    assert p.vars["VICIREC_ACTION"] == "STOP"
    assert agistatus in p.vars["VICIREC_MESSAGE"]
    assert p.logs and p.logs[0].startswith("WARNING,")


REFUSED = {"AGISTATUS": "FAILURE"}  # agi:// connection refused: the daemon never claimed the call
DIED = {"AGISTATUS": "FAILURE", "VICIREC_CLAIMED": "1"}  # claimed the call, then died


def test_daemon_down_falls_back_to_the_process_agi_once_and_says_so() -> None:
    agi = FakeAgi(REFUSED, OK_REC)
    p = pbx(agi)
    p.gosub("vicirec", "start", "1", ["_CONSENT", "3"])
    assert agi.calls == [[DAEMON, "START", "_CONSENT", "confirm=3"],
                         ["vicirec.agi", "START", "_CONSENT", "confirm=3"]]
    assert p.vars["VICIREC_RESULT"] == "OK"
    assert p.vars["VICIREC_RECORDING"] == "1"
    assert p.vars["VICIREC_MESSAGE"].endswith("[daemon down: ran vicirec.agi]")
    assert len(p.vars["VICIREC_MESSAGE"]) <= 200
    assert len(p.logs) == 1 and p.logs[0].startswith("WARNING,") and DAEMON in p.logs[0]
    assert not p.frames


def test_fallback_keeps_a_long_message_within_200_characters() -> None:
    answer = {"VICIREC_RESULT": "ERROR", "VICIREC_ERROR": "NO_AGENT", "VICIREC_MESSAGE": "x" * 200}
    p = pbx(FakeAgi(REFUSED, answer))
    p.gosub("vicirec", "status", "1", [])
    assert p.vars["VICIREC_ERROR"] == "NO_AGENT"
    assert len(p.vars["VICIREC_MESSAGE"]) <= 200


@pytest.mark.parametrize("answer", [DIED, {"AGISTATUS": "SUCCESS"}, {"AGISTATUS": "HANGUP"}])
def test_a_daemon_that_may_have_acted_is_never_followed_by_the_process_agi(answer: dict[str, str]) -> None:
    agi = FakeAgi(answer, OK_REC)
    p = pbx(agi)
    p.gosub("vicirec", "start", "1", ["_CONSENT"])
    assert agi.calls == [[DAEMON, "START", "_CONSENT", "confirm="]]  # one START, never a second
    assert p.vars["VICIREC_RESULT"] == "ERROR"
    assert p.vars["VICIREC_ERROR"] == "INTERNAL"
    assert DAEMON in p.vars["VICIREC_MESSAGE"]


def test_a_stale_claim_from_an_earlier_run_is_cleared_before_the_agi() -> None:
    agi = FakeAgi(REFUSED, OK_REC)
    p = pbx(agi)
    p.vars["VICIREC_CLAIMED"] = "1"  # left by an earlier run on this channel
    p.gosub("vicirec", "status", "1", [])
    assert [c[0] for c in agi.calls] == [DAEMON, "vicirec.agi"]
    assert p.vars["VICIREC_RESULT"] == "OK"


@pytest.mark.parametrize(("fallback_status", "error"), [("NOTFOUND", "UNREACHABLE"), ("FAILURE", "INTERNAL")])
def test_daemon_down_and_the_fallback_cannot_run(fallback_status: str, error: str) -> None:
    agi = FakeAgi(REFUSED, {"AGISTATUS": fallback_status})
    p = pbx(agi)
    p.gosub("vicirec", "stop", "1", ["3"])
    assert len(agi.calls) == 2
    assert p.vars["VICIREC_RESULT"] == "ERROR"
    assert p.vars["VICIREC_ERROR"] == error
    assert DAEMON in p.vars["VICIREC_MESSAGE"] and "vicirec.agi" in p.vars["VICIREC_MESSAGE"]
    assert fallback_status in p.vars["VICIREC_MESSAGE"]


@pytest.mark.parametrize("target", [DAEMON, "agi://10.0.0.5/vicirec", "hagi://vicirec.example.net/vicirec"])
def test_a_pinned_daemon_that_is_down_is_unreachable_not_internal(target: str) -> None:
    agi = FakeAgi(REFUSED, OK_REC)
    p = pbx(agi, globals_={"VICIREC_AGI": target})
    p.gosub("vicirec", "start", "1", ["_CONSENT", "3"])
    assert agi.calls == [[target, "START", "_CONSENT", "confirm=3"]]  # pinned: no fallback
    assert p.vars["VICIREC_RESULT"] == "ERROR"
    assert p.vars["VICIREC_ERROR"] == "UNREACHABLE"
    assert target in p.vars["VICIREC_MESSAGE"]
    assert p.vars["VICIREC_ACTION"] == "START"


def test_a_pinned_daemon_that_died_after_claiming_is_internal() -> None:
    agi = FakeAgi(DIED)
    p = pbx(agi, globals_={"VICIREC_AGI": DAEMON})
    p.gosub("vicirec", "status", "1", [])
    assert p.vars["VICIREC_ERROR"] == "INTERNAL"
    assert len(agi.calls) == 1


def test_library_keeps_its_locals_to_itself_and_leaves_vicirec_agent_alone() -> None:
    answer = {"VICIREC_RESULT": "ERROR", "VICIREC_ERROR": "NO_AGENT", "VICIREC_MESSAGE": 'a "b", (c)'}
    p = pbx(FakeAgi(answer))
    p.vars["VICIREC_AGENT"] = "1000"
    p.gosub("vicirec", "start", "1", ["_X", "1"])
    assert not {k for k in p.vars if k.startswith("vr_") or k.startswith("ARG")}
    assert p.vars["VICIREC_AGENT"] == "1000"
    assert p.vars["VICIREC_ERROR"] == "NO_AGENT"
    assert not p.frames


def test_expression_evaluator_fails_like_asterisk_on_unquoted_values() -> None:
    # scenario-output.txt: "syntax error ... unexpected '<token>'" for these shapes
    with pytest.raises(lint.DialplanError):
        lint.evaluate(' = "OK"')
    with pytest.raises(lint.DialplanError):
        lint.evaluate('not recording = "OK"')
    assert lint.evaluate('"not recording" = "not recording"') == "1"
    assert lint.evaluate('"" = "" & "a" != "b"') == "1"
    assert lint.evaluate('"OK" = "ERROR" | "1" = "1"') == "1"


# -- example 1: consent ----------------------------------------------------------------------


def test_consent_yes_announces_only_a_confirmed_recording() -> None:
    agi = FakeAgi(OK_REC)
    p = pbx(agi, digits=["1"])
    p.gosub("vicirec-example-consent", "s", "1")
    assert agi.calls == [[DAEMON, "START", "_CONSENT", "confirm=3"]]
    assert p.vars["VICIREC_CONSENT"] == "YES"
    assert p.played[-2:] == ["beep", "auth-thankyou"]


@pytest.mark.parametrize(
    "answer",
    [
        {"VICIREC_RESULT": "OK", "VICIREC_RECORDING": ""},
        {"VICIREC_RESULT": "ERROR", "VICIREC_ERROR": "NOT_CONFIRMED", "VICIREC_RECORDING": "0"},
        {"VICIREC_RESULT": "ERROR", "VICIREC_ERROR": "UNREACHABLE", "VICIREC_MESSAGE": "timed out, twice"},
    ],
)
def test_consent_failed_start_apologises(answer: dict[str, str]) -> None:
    p = pbx(FakeAgi(answer), digits=["1"])
    p.gosub("vicirec-example-consent", "s", "1")
    assert p.vars["VICIREC_CONSENT"] == "FAILED"
    assert "beep" not in p.played
    assert p.played[-1] == "vm-sorry"


@pytest.mark.parametrize("digits", [["2"], [""], ["9"]])
def test_consent_declined_or_silent_never_starts(digits: list[str]) -> None:
    agi = FakeAgi()
    p = pbx(agi, digits=digits)
    p.gosub("vicirec-example-consent", "s", "1")
    assert agi.calls == []
    assert p.vars["VICIREC_CONSENT"] == "NO"


@pytest.mark.parametrize("missing", ["this-call-may-be-monitored-or-recorded", "press-1"])
def test_consent_that_could_not_ask_is_not_a_no_and_never_starts(missing: str) -> None:
    """issue 11.3: a missing prompt ends Read() at once (READSTATUS ERROR); that is no answer at all."""
    agi = FakeAgi(OK_REC)
    p = pbx(agi, digits=["1"], missing_sounds=[missing])
    p.gosub("vicirec-example-consent", "s", "1")
    assert agi.calls == []
    assert p.vars["VICIREC_CONSENT"] == "NOT_ASKED"
    assert p.vars["VICIREC_CONSENT_READSTATUS"] == "ERROR"
    assert [log.split(",", 1)[0] for log in p.logs] == ["WARNING"]
    assert "auth-thankyou" not in p.played


# -- example 2: PCI pause --------------------------------------------------------------------


STOPPED_VERIFIED = {"VICIREC_RESULT": "OK", "VICIREC_RECORDING": "0", "VICIREC_VERIFIED": "1"}
NOTHING_VERIFIED = {"VICIREC_RESULT": "ERROR", "VICIREC_ERROR": "NOTHING_TO_STOP", "VICIREC_RECORDING": "0",
                    "VICIREC_VERIFIED": "1"}


def test_pci_captures_only_after_a_verified_stop_and_resumes() -> None:
    agi = FakeAgi(STOPPED_VERIFIED, OK_REC)
    p = pbx(agi)
    p.gosub("vicirec-example-pci", "s", "1")
    assert agi.calls == [
        [DAEMON, "STOP", "confirm=5"],
        [DAEMON, "START", "_PCIRESUME", "confirm=5"],
    ]
    assert any(t.startswith("s@vicirec-example-pci-capture") for t in p.trace)
    assert p.vars["VICIREC_PCI"] == "DONE"


def test_pci_never_starts_a_recording_that_was_not_running() -> None:
    agi = FakeAgi(NOTHING_VERIFIED, OK_REC)
    p = pbx(agi)
    p.gosub("vicirec-example-pci", "s", "1")
    assert agi.calls == [[DAEMON, "STOP", "confirm=5"]]
    assert any(t.startswith("s@vicirec-example-pci-capture") for t in p.trace)
    assert p.vars["VICIREC_PCI"] == "NOT_RECORDED"


@pytest.mark.parametrize(
    "stop_answer",
    [
        {"VICIREC_RESULT": "ERROR", "VICIREC_ERROR": "NOT_CONFIRMED", "VICIREC_RECORDING": ""},
        {"VICIREC_RESULT": "ERROR", "VICIREC_ERROR": "NOTHING_TO_STOP", "VICIREC_RECORDING": ""},
        {"VICIREC_RESULT": "ERROR", "VICIREC_ERROR": "TIMEOUT"},
        {"VICIREC_RESULT": "OK", "VICIREC_RECORDING": "1"},
        {"VICIREC_RESULT": "OK", "VICIREC_RECORDING": "1", "VICIREC_VERIFIED": "1"},
        OK_NOT_REC,  # confirmed, but not verified (no mysql lookup)
        {**STOPPED_VERIFIED, "VICIREC_VERIFIED": "0"},
        {**NOTHING_VERIFIED, "VICIREC_VERIFIED": ""},
        {"AGISTATUS": "FAILURE", "VICIREC_CLAIMED": "1"},  # the daemon took the call and died
    ],
)
def test_pci_refuses_capture_unless_the_stop_is_verified(stop_answer: Optional[dict[str, str]]) -> None:
    agi = FakeAgi(stop_answer)
    p = pbx(agi, agi_status="FAILURE")
    p.gosub("vicirec-example-pci", "s", "1")
    stopped = stop_answer is not None and stop_answer.get("VICIREC_RESULT") == "OK"
    # a STOP that went through unverified is undone; nothing else is started
    assert agi.calls[1:] == ([[DAEMON, "START", "_PCIRESUME", "confirm=5"]] if stopped else [])
    assert not any("pci-capture" in t for t in p.trace)
    assert p.vars["VICIREC_PCI"] == "REFUSED"


def test_pci_does_not_trust_an_earlier_runs_verdict() -> None:
    p = pbx(FakeAgi(OK_NOT_REC))  # an AGI that does not report VICIREC_VERIFIED (an older vicirec)
    p.vars["VICIREC_VERIFIED"] = "1"  # stale, from an earlier STOP
    p.gosub("vicirec-example-pci", "s", "1")
    assert p.vars["VICIREC_PCI"] == "REFUSED"


def test_pci_reports_a_failed_resume() -> None:
    p = pbx(FakeAgi(STOPPED_VERIFIED, {"VICIREC_RESULT": "ERROR", "VICIREC_ERROR": "NOT_LOGGED_IN"}))
    p.gosub("vicirec-example-pci", "s", "1")
    assert p.vars["VICIREC_PCI"] == "RESUME_FAILED"
    assert any("could not resume" in entry for entry in p.logs)


# -- example 3: STATUS -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "state"),
    [
        (OK_REC, "RECORDING"),
        (OK_NOT_REC, "NOT_RECORDING"),
        ({"VICIREC_RESULT": "OK", "VICIREC_RECORDING": ""}, "UNKNOWN"),
        ({"VICIREC_RESULT": "ERROR", "VICIREC_ERROR": "AUTH", "VICIREC_RECORDING": "1"}, "UNKNOWN"),
    ],
)
def test_status_branches_three_ways(answer: dict[str, str], state: str) -> None:
    agi = FakeAgi(answer)
    p = pbx(agi)
    p.gosub("vicirec-example-status", "s", "1")
    assert agi.calls == [[DAEMON, "STATUS"]]
    assert p.vars["VICIREC_EXAMPLE_STATE"] == state


# -- example 4: applicationmap features ------------------------------------------------------


def test_features_are_self_and_run_the_library_on_the_pressing_channel() -> None:
    files = lint.parse_files(shipped_texts())
    features = {fe.name: fe for f in files for fe in f.features}
    assert set(features) == {"vicirec_consent", "vicirec_pause", "vicirec_resume", "vicirec_status"}
    assert {fe.activate_on for fe in features.values()} == {"self"}
    agi = FakeAgi(OK_REC, {"VICIREC_RESULT": "ERROR", "VICIREC_ERROR": "NOT_CONFIRMED"}, OK_REC, OK_NOT_REC)
    p = pbx(agi)
    for name in ("vicirec_consent", "vicirec_pause", "vicirec_resume", "vicirec_status"):
        p.feature(name)
    assert [c[1:] for c in agi.calls] == [
        ["START", "_CONSENT", "confirm=3"],
        ["STOP", "confirm=3"],
        ["START", "_RESUME", "confirm=3"],
        ["STATUS"],
    ]
    assert p.played == ["beep", "beeperr", "beep", "beeperr"]
    assert not p.frames


def test_bridge_example_sets_features_per_leg_with_a_predial_handler() -> None:
    p = pbx(FakeAgi())
    p.gosub("vicirec-example-bridge", "s", "1", ["PJSIP/1000", "1000"])
    assert p.vars["DYNAMIC_FEATURES"] == "vicirec_consent"
    assert p.vars["VICIREC_AGENT"] == "1000"
    assert p.dials == ["PJSIP/1000,60,gb(vicirec-example-bridge-predial^s^1(1000))"]
    # the pre-dial handler, run on the agent leg
    leg = pbx(FakeAgi())
    leg.gosub("vicirec-example-bridge-predial", "s", "1", ["1000"])
    assert leg.vars["VICIREC_AGENT"] == "1000"
    keys = set(leg.vars["DYNAMIC_FEATURES"].split("#"))
    assert keys == {"vicirec_pause", "vicirec_resume", "vicirec_status"}


# -- example 5: ConfBridge menu --------------------------------------------------------------


def test_confbridge_menu_runs_and_returns_to_the_conference_without_return() -> None:
    agi = FakeAgi(OK_REC, OK_NOT_REC)
    p = pbx(agi)
    p.menu_key("*81")  # would raise DialplanError on a Return() without a Gosub frame
    p.menu_key("*84")
    assert [c[1] for c in agi.calls] == ["START", "STATUS"]
    assert p.played == ["beep", "beeperr"]
    assert not p.frames


def test_an_agi_that_reports_nothing_leaves_no_stale_output_variable() -> None:
    from vicirec.engine import VARIABLE_NAMES

    inputs = {"VICIREC_AGENT", "VICIREC_AGENT_DISCOVERED"}  # the dialplan's choice of agent; kept on purpose
    p = pbx(FakeAgi(None), agi_status="FAILURE", globals_={"VICIREC_AGI": "vicirec.agi"})
    stale = {name: "stale" for name in VARIABLE_NAMES if name not in inputs}
    p.vars.update(stale)
    p.gosub("vicirec", "stop", "1", ["3"])
    left = {name for name in stale if p.vars.get(name) == "stale"}
    assert left == set()
