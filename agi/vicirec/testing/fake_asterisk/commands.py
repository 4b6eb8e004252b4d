"""res_agi's command table: the commands it knows (in registration order), their usage texts,
and the :class:`Reply` a command makes Asterisk write.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from vicirec.testing.fake_asterisk.channel import _b

DEAD_REPLY = b"511 Command Not Permitted on a dead channel or intercept routine\n"
INVALID_REPLY = b"510 Invalid or unknown command\n"
USAGE_HEAD = b"520-Invalid command syntax.  Proper usage follows:\n"
USAGE_TAIL = b"520 End of proper usage.\n"


@dataclass
class Reply:
    """What one command makes Asterisk write, and how long it blocks first.

    ``chunks`` are the separate ``write()`` calls (the 520 usage reply is three). ``wait`` is how
    long the command blocks before replying (``math.inf`` = until hangup). ``interrupted`` is the
    reply if the caller hangs up during the wait (None: not interruptible). ``hangup_after``: the
    command itself hung the channel up (``HANGUP``).
    """

    chunks: list[bytes]
    wait: float = 0.0
    interrupted: Optional[list[bytes]] = None
    hangup_after: bool = False


def _result(n: int, data: Optional[bytes] = None) -> Reply:
    if data is None:
        return Reply([b"200 result=%d\n" % n])
    return Reply([b"200 result=%d (" % n + data + b")\n"])


_USAGE: dict[str, str] = {
    # Seen in the transcripts (protocol-process.txt):
    "set variable": "Sets a variable to the current channel.",
    "get variable": (
        "Returns <literal>0</literal> if <replaceable>variablename</replaceable> is not set. Returns "
        "<literal>1</literal> if <replaceable>variablename</replaceable> is set and returns the variable in "
        "parentheses.\nExample return code: 200 result=1 (testvariable)"
    ),
    "channel status": (
        "Returns the status of the specified <replaceable>channelname</replaceable>. If no channel name is "
        "given then returns the status of the current channel.\nReturn values:\n"
        "    <enum>0</enum> - Channel is down and available.\n"
        "    <enum>1</enum> - Channel is down, but reserved.\n"
        "    <enum>2</enum> - Channel is off hook.\n"
        "    <enum>3</enum> - Digits (or equivalent) have been dialed.\n"
        "    <enum>4</enum> - Line is ringing.\n"
        "    <enum>5</enum> - Remote end is ringing.\n"
        "    <enum>6</enum> - Line is up.\n"
        "    <enum>7</enum> - Line is busy."
    ),
    # Rendered from res_agi's XML documentation the same way (not observed on the wire):
    "get full variable": (
        "Returns <literal>0</literal> if <replaceable>variablename</replaceable> is not set or channel does "
        "not exist. Returns <literal>1</literal> if <replaceable>variablename</replaceable> is set "
        "and returns "
        "the variable in parenthesis. Understands complex variable names and builtin variables, unlike GET "
        "VARIABLE.\nExample return code: 200 result=1 (testvariable)"
    ),
    "database get": (
        "Retrieves an entry in the Asterisk database for a given <replaceable>family</replaceable> and "
        "<replaceable>key</replaceable>.\nReturns <literal>0</literal> if <replaceable>key</replaceable> "
        "is not set. Returns <literal>1</literal> if <replaceable>key</replaceable> is set and returns the "
        "variable in "
        "parenthesis.\nExample return code: 200 result=1 (testvariable)"
    ),
    "database put": (
        "Adds or updates an entry in the Asterisk database for a given <replaceable>family</replaceable>, "
        "<replaceable>key</replaceable>, and <replaceable>value</replaceable>.\nReturns "
        "<literal>1</literal> if "
        "successful, <literal>0</literal> otherwise."
    ),
    "database del": (
        "Deletes an entry in the Asterisk database for a given <replaceable>family</replaceable> and "
        "<replaceable>key</replaceable>.\nReturns <literal>1</literal> if successful, <literal>0</literal> "
        "otherwise."
    ),
    "database deltree": (
        "Deletes a <replaceable>family</replaceable> or specific <replaceable>keytree</replaceable> within a "
        "<replaceable>family</replaceable> in the Asterisk database.\nReturns <literal>1</literal> if "
        "successful, <literal>0</literal> otherwise."
    ),
    "exec": (
        "Executes <replaceable>application</replaceable> with given <replaceable>options</replaceable>.\n"
        "Returns whatever the <replaceable>application</replaceable> returns, or <literal>-2</literal> on "
        "failure to find <replaceable>application</replaceable>."
    ),
    "hangup": (
        "Hangs up the specified channel. If no channel name is given, hangs up the current channel"
    ),
    "stream file": (
        "Send the given file, allowing playback to be interrupted by the given digits, if any. Returns "
        "<literal>0</literal> if playback completes without a digit being pressed, or the ASCII numerical "
        "value of the digit if one was pressed, or <literal>-1</literal> on error or if the channel was "
        "disconnected. If musiconhold is playing before calling stream file it will be automatically "
        "stopped and will not be restarted after completion."
    ),
    "verbose": (
        "Sends <replaceable>message</replaceable> to the console via verbose message system. "
        "<replaceable>level</replaceable> is the verbose level (1-4). Always returns <literal>1</literal>"
    ),
    "wait for digit": (
        "Waits up to <replaceable>timeout</replaceable> milliseconds for channel to receive a DTMF digit. "
        "Returns <literal>-1</literal> on channel failure, <literal>0</literal> if no digit is received in "
        "the timeout, or the numerical value of the ascii of the digit if one is received. Use "
        "<literal>-1</literal> "
        "for the <replaceable>timeout</replaceable> value if you desire the call to block indefinitely."
    ),
    "set context": "Sets the context for continuation upon exiting the application.",
    "set extension": "Changes the extension for continuation upon exiting the application.",
    "set priority": (
        "Changes the priority for continuation upon exiting the application. The priority must be a valid "
        "priority or label."
    ),
    "set callerid": "Changes the callerid of the current channel.",
    "gosub": "Cause the channel to execute the specified dialplan subroutine.",
}

# (words, allowed on a dead channel, handler method name or "" for the generic 200 result=0), in
# res_agi's registration order (find_command takes the first whose words all match).
_COMMANDS: list[tuple[tuple[str, ...], bool, str]] = [
    (("answer",), False, "_cmd_answer"),
    (("asyncagi", "break"), True, ""),
    (("channel", "status"), False, "_cmd_channel_status"),
    (("database", "del"), True, "_cmd_database_del"),
    (("database", "deltree"), True, "_cmd_database_deltree"),
    (("database", "get"), True, "_cmd_database_get"),
    (("database", "put"), True, "_cmd_database_put"),
    (("exec",), True, "_cmd_exec"),
    (("get", "data"), False, ""),
    (("get", "full", "variable"), True, "_cmd_get_full_variable"),
    (("get", "option"), False, ""),
    (("get", "variable"), True, "_cmd_get_variable"),
    (("hangup",), False, "_cmd_hangup"),
    (("noop",), True, "_cmd_noop"),
    (("receive", "char"), False, ""),
    (("receive", "text"), False, ""),
    (("record", "file"), False, ""),
    (("say", "alpha"), False, ""),
    (("say", "digits"), False, ""),
    (("say", "number"), False, ""),
    (("say", "phonetic"), False, ""),
    (("say", "date"), False, ""),
    (("say", "time"), False, ""),
    (("say", "datetime"), False, ""),
    (("send", "image"), False, ""),
    (("send", "text"), False, ""),
    (("set", "autohangup"), False, ""),
    (("set", "callerid"), False, "_cmd_set_callerid"),
    (("set", "context"), False, "_cmd_set_context"),
    (("set", "extension"), False, "_cmd_set_extension"),
    (("set", "music"), False, ""),
    (("set", "priority"), False, "_cmd_set_priority"),
    (("set", "variable"), True, "_cmd_set_variable"),
    (("stream", "file"), False, "_cmd_stream_file"),
    (("control", "stream", "file"), False, ""),
    (("tdd", "mode"), False, ""),
    (("verbose",), True, "_cmd_verbose"),
    (("wait", "for", "digit"), False, "_cmd_wait_for_digit"),
    (("speech", "create"), False, ""),
    (("speech", "set"), False, ""),
    (("speech", "destroy"), True, ""),
    (("speech", "load", "grammar"), False, ""),
    (("speech", "unload", "grammar"), True, ""),
    (("speech", "activate", "grammar"), False, ""),
    (("speech", "deactivate", "grammar"), False, ""),
    (("speech", "recognize"), False, ""),
    (("gosub",), False, "_cmd_gosub"),
]


def _find_command(argv: list[bytes]) -> Optional[tuple[tuple[str, ...], bool, str]]:
    """res_agi ``find_command(argv, 0)``: every word of the command name must match (any case);
    extra words are arguments."""
    for entry in _COMMANDS:
        words = entry[0]
        if len(argv) < len(words):
            continue
        if all(argv[i].lower() == _b(w) for i, w in enumerate(words)):
            return entry
    return None
