""":class:`FakeAsterisk`: runs a real process AGI over pipes or talks to a real FastAGI server over
TCP, every wait bounded by the run's ``timeout``.
"""

from __future__ import annotations

import os
import signal as _signal
import socket
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Optional

from vicirec.testing.fake_asterisk.apps import DEFAULT_APPLICATIONS, AppHandler
from vicirec.testing.fake_asterisk.args import _ast_false, _ast_true
from vicirec.testing.fake_asterisk.channel import AST_ENVIRONMENT, FakeChannel, _b, build_env_block
from vicirec.testing.fake_asterisk.interpreter import AgiInterpreter
from vicirec.testing.fake_asterisk.session import HANGUP_LINE, _agistatus, _Session, _Transport
from vicirec.testing.fake_asterisk.transcript import AgiRun, HangupPlan, TranscriptLine

FASTAGI_CONNECT_TIMEOUT = 2.0  # MAX_AGI_CONNECT, hard-coded 2000 ms


class FakeAsterisk:
    """Runs AGIs like Asterisk 22's res_agi.

    Instance-wide knobs (each run can override the last five): ``agi_dir`` (AST_AGI_DIR, used to
    resolve a relative script), ``database`` (AstDB shared by all runs, ``{"/family/key": value}``),
    ``applications`` (EXEC apps), ``ast_environment`` (the AST_* variables), ``wait_scale``
    (multiplies WAIT FOR DIGIT / EXEC Wait), ``env_block_override`` (raw bytes sent instead of the
    environment block), ``close_after_env`` (close the pipes / socket right after the block, no
    signal), ``reply_delay`` (seconds before every reply), ``tcp_nodelay`` (FastAGI; off like Asterisk,
    whose one-write-per-line replies then meet Nagle).
    """

    def __init__(self, *, agi_dir: str = "/var/lib/asterisk/agi-bin",
                 database: Optional[dict[str, str]] = None,
                 applications: Optional[Mapping[str, AppHandler]] = None,
                 ast_environment: Optional[Mapping[str, str]] = None, wait_scale: float = 1.0,
                 env_block_override: Optional[bytes] = None, close_after_env: bool = False,
                 reply_delay: float = 0.0, tcp_nodelay: bool = False) -> None:
        self.agi_dir = agi_dir
        self.database: dict[str, str] = database if database is not None else {}
        self.applications: dict[str, AppHandler] = dict(
            applications if applications is not None else DEFAULT_APPLICATIONS)
        self.ast_environment: dict[str, str] = dict(ast_environment or AST_ENVIRONMENT)
        self.ast_environment["AST_AGI_DIR"] = agi_dir
        self.wait_scale = wait_scale
        self.env_block_override = env_block_override
        self.close_after_env = close_after_env
        self.reply_delay = reply_delay
        self.tcp_nodelay = tcp_nodelay

    def interpreter(self, channel: FakeChannel) -> AgiInterpreter:
        """The pure command interpreter this fake uses for ``channel``."""
        return AgiInterpreter(channel, database=self.database, applications=self.applications,
                              wait_scale=self.wait_scale)

    @staticmethod
    def _flags(channel: FakeChannel, agi_sighup: bool, exit_on_hangup: bool) -> tuple[bool, bool]:
        """AGISIGHUP / AGIEXITONHANGUP: the keyword arguments, or the channel variables."""
        send_sighup = agi_sighup and not _ast_false(channel.variables.get("AGISIGHUP"))
        exit_flag = exit_on_hangup or _ast_true(channel.variables.get("AGIEXITONHANGUP"))
        return send_sighup, exit_flag

    def _finish(self, session: Optional[_Session], channel: FakeChannel, agistatus: str, *,
                transcript: list[TranscriptLine], exit_code: Optional[int], sig: Optional[int], stderr: bytes,
                elapsed: float, timed_out: bool) -> AgiRun:
        channel.variables["AGISTATUS"] = agistatus
        if session is not None and session.hungup_during:
            channel.hung_up = True
        return AgiRun(
            transcript=transcript, channel=channel, agistatus=agistatus, exit_code=exit_code, signal=sig,
            stderr=stderr, elapsed=elapsed, timed_out=timed_out,
            commands=session.commands if session else [],
            verbose=session.interp.verbose if session else [],
            execs=session.interp.execs if session else [],
            hangup_at=session.hangup_at if session else None,
        )

    # ---- process AGI ---------------------------------------------------------------------------

    def run_process(self, argv: Sequence[str], args: Sequence[str], channel: FakeChannel, *,
                    env: Optional[Mapping[str, str]] = None, hangup: Optional[HangupPlan] = None,
                    agi_sighup: bool = True, exit_on_hangup: bool = False, timeout: float = 30.0,
                    request: Optional[str] = None, cwd: Optional[str] = None,
                    env_block_override: Optional[bytes] = None, close_after_env: Optional[bool] = None,
                    reply_delay: Optional[float] = None) -> AgiRun:
        """``AGI(argv[0],args...)`` as a process AGI: spawn ``argv + args`` (argv[1:] lets a test run
        ``[sys.executable, script]``) with pipes on fds 0/1/2, then serve it until it closes stdout.

        ``request`` replaces ``agi_request`` (default ``argv[0]``).
        """
        if not argv:
            raise ValueError("argv must name the script")
        start = time.monotonic()
        deadline = start + timeout
        script = argv[0]
        path = script if os.path.isabs(script) else os.path.join(self.agi_dir, script)
        early: list[TranscriptLine] = []
        if not os.path.exists(path):
            early.append(TranscriptLine(0.0, "NOTE", _b(f"Failed to execute '{path}': File does not exist.")))
            return self._finish(None, channel, "NOTFOUND", transcript=early, exit_code=None, sig=None,
                                stderr=b"", elapsed=time.monotonic() - start, timed_out=False)
        child_env = dict(os.environ if env is None else env)
        child_env.update(self.ast_environment)
        try:
            proc = subprocess.Popen(  # noqa: S603 - running the AGI under test is the point
                list(argv) + list(args), executable=path, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, close_fds=True, env=child_env, cwd=cwd, start_new_session=True)
        except OSError as exc:
            early.append(TranscriptLine(0.0, "NOTE", _b(f"Failed to execute '{path}': {exc.strerror}")))
            return self._finish(None, channel, "FAILURE", transcript=early, exit_code=None, sig=None,
                                stderr=b"", elapsed=time.monotonic() - start, timed_out=False)
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        stderr_chunks: list[bytes] = []
        stderr_thread = threading.Thread(target=_drain, args=(proc.stderr, stderr_chunks), daemon=True)
        stderr_thread.start()

        send_sighup, exit_flag = self._flags(channel, agi_sighup, exit_on_hangup)
        transport = _Transport(proc.stdout.fileno(), proc.stdin.fileno())
        session: _Session

        def sighup() -> None:
            if proc.returncode is None:
                try:
                    os.kill(proc.pid, _signal.SIGHUP)
                except ProcessLookupError:
                    return
                session.record("SIG", b"SIGHUP")

        session = _Session(self, channel, transport, fast=False, start=start, deadline=deadline,
                           hangup=hangup, send_sighup=send_sighup, exit_on_hangup=exit_flag,
                           reply_delay=self.reply_delay if reply_delay is None else reply_delay,
                           notify=sighup)
        env_lines = build_env_block(channel, script if request is None else request, args)
        override = self.env_block_override if env_block_override is None else env_block_override
        closing = self.close_after_env if close_after_env is None else close_after_env
        reason = session.run(env_lines, override, closing)

        timed_out = False
        if reason in ("failure", "exit_on_hangup") and send_sighup:
            sighup()  # run_agi's "Notify process" after the loop (pid not reaped yet)
        if reason != "eof":
            _close_quietly(proc.stdin, proc.stdout)  # fclose(readf) / close(fds): the script now gets EPIPE
        if reason == "timeout":
            timed_out = True
            session.note(f"fake: timeout after {timeout:g} s; killing the AGI's process group")
            _kill_group(proc)
        elapsed_at_leave = time.monotonic() - start
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()) if not timed_out else 5.0)
        except subprocess.TimeoutExpired:
            timed_out = True
            session.note(f"fake: the AGI process outlived the {timeout:g} s timeout; "
                         "killed its process group")
            _kill_group(proc)
            proc.wait(timeout=5.0)
        if reason == "eof":
            elapsed_at_leave = time.monotonic() - start  # Asterisk's waitpid() blocks until the exit
            _close_quietly(proc.stdin, proc.stdout)
        elif reason in ("failure", "exit_on_hangup", "closed"):
            session.note(f"process exited ({proc.returncode}) after Asterisk left the AGI")
        stderr_thread.join(timeout=1.0)
        if not stderr_thread.is_alive():  # else a grandchild still holds fd 2; leave it to the thread
            _close_quietly(proc.stderr)
        code = proc.returncode
        status_nonzero = code != 0
        agistatus = _agistatus(reason, session.hungup_during, status_nonzero)
        if reason == "exit_on_hangup":
            agistatus = "HANGUP"
        return self._finish(
            session, channel, agistatus, transcript=session.transcript,
            exit_code=code if code is not None and code >= 0 else None,
            sig=-code if code is not None and code < 0 else None,
            stderr=b"".join(stderr_chunks), elapsed=elapsed_at_leave, timed_out=timed_out)

    # ---- FastAGI -------------------------------------------------------------------------------

    def run_fastagi(self, host: str, port: int, script: str, args: Sequence[str], channel: FakeChannel, *,
                    hangup: Optional[HangupPlan] = None, agi_sighup: bool = True,
                    exit_on_hangup: bool = False,
                    timeout: float = 30.0, request: Optional[str] = None,
                    env_block_override: Optional[bytes] = None, close_after_env: Optional[bool] = None,
                    reply_delay: Optional[float] = None, tcp_nodelay: Optional[bool] = None) -> AgiRun:
        """``AGI(agi://host:port/script,args...)``: connect (2 s timeout), send the block, serve the
        server's commands until it closes, then send ``HANGUP`` as Asterisk does."""
        start = time.monotonic()
        deadline = start + timeout
        url = f"agi://{host}:{port}" + (f"/{script}" if script else "")
        try:
            sock = socket.create_connection((host, port), timeout=min(FASTAGI_CONNECT_TIMEOUT, timeout))
        except OSError as exc:
            text = f"Connecting to '{host}:{port}' failed for url '{url}': {exc}"
            note = TranscriptLine(0.0, "NOTE", _b(text))
            return self._finish(None, channel, "FAILURE", transcript=[note], exit_code=None, sig=None,
                                stderr=b"", elapsed=time.monotonic() - start, timed_out=False)
        nodelay = self.tcp_nodelay if tcp_nodelay is None else tcp_nodelay
        if nodelay:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        send_sighup, exit_flag = self._flags(channel, agi_sighup, exit_on_hangup)
        transport = _Transport(sock.fileno(), sock.fileno(), sock)
        session: _Session

        def hangup_line() -> None:
            session.notify_fast()

        session = _Session(self, channel, transport, fast=True, start=start, deadline=deadline, hangup=hangup,
                           send_sighup=send_sighup, exit_on_hangup=exit_flag,
                           reply_delay=self.reply_delay if reply_delay is None else reply_delay,
                           notify=hangup_line)
        env_lines = build_env_block(channel, url if request is None else request, args, network=True,
                                    network_script=script)
        override = self.env_block_override if env_block_override is None else env_block_override
        closing = self.close_after_env if close_after_env is None else close_after_env
        try:
            reason = session.run(env_lines, override, closing)
            if reason == "timeout":
                session.note(f"fake: timeout after {timeout:g} s; closing the socket")
            elif reason != "closed" and send_sighup:
                session.send(HANGUP_LINE)  # run_agi's "Notify process" after the loop
        finally:
            try:
                sock.close()
            except OSError:
                pass
        agistatus = _agistatus(reason, session.hungup_during, False)
        if reason == "exit_on_hangup":
            agistatus = "HANGUP"
        return self._finish(session, channel, agistatus, transcript=session.transcript, exit_code=None,
                            sig=None, stderr=b"", elapsed=time.monotonic() - start,
                            timed_out=reason == "timeout")


def _drain(stream: object, sink: list[bytes]) -> None:
    read = getattr(stream, "read1", None) or getattr(stream, "read", None)
    if read is None:
        return
    try:
        while True:
            chunk = read(65536)
            if not chunk:
                return
            sink.append(chunk)
    except (OSError, ValueError):
        return


def _close_quietly(*streams: object) -> None:
    for stream in streams:
        close = getattr(stream, "close", None)
        if close is None:
            continue
        try:
            close()
        except OSError:
            pass


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the AGI's own process group (it was started in a new session)."""
    try:
        os.killpg(proc.pid, _signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        try:
            proc.kill()
        except ProcessLookupError:
            pass
