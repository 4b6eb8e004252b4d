"""Dialplan arguments, the stage sanitiser and the config loader: the input vicirec refuses or cleans."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vicirec.config import config_from_mapping, load_config
from vicirec.errors import BadRequest, ConfigError, ErrorCode
from vicirec.request import parse_arguments
from vicirec.vicidial.responses import Action
from vicirec.vicidial.stage import sanitize_stage

BASE = {"vicidial": {"api_url": "https://dialer.example.com/agc/api.php", "user": "6666", "password": "1234"}}


def test_arguments_any_case_stage_and_options_in_any_order() -> None:
    inv = parse_arguments(["start", "_CONSENT", "confirm=3", "agent=1000"])
    assert (inv.action, inv.stage, inv.agent, inv.confirm) == (Action.START, "_CONSENT", "1000", 3.0)
    inv = parse_arguments(["Stop", "confirm=1.5"])
    assert (inv.action, inv.confirm, inv.agent) == (Action.STOP, 1.5, None)
    inv = parse_arguments(["STATUS", "", "agent=", "confirm="])  # empty Gosub arguments
    assert (inv.agent, inv.confirm) == (None, None)


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["PAUSE"],
        ["START|STOP"],
        ["STATUS", "_X"],
        ["START", "_A", "_B"],
        ["START", "bogus=1"],
        ["START", "agent=1000' OR '1'='1"],
        ["START", "agent=1000&pass=x"],
        ["START", "agent=" + "1" * 21],
        ["STOP", "confirm=abc"],
        ["STOP", "confirm=-1"],
        ["STOP", "confirm=nan"],
        ["STOP", "confirm=1000"],
        ["STOP", "confirm=1", "confirm=2"],
        ["START", "x" * 500],
    ],
)
def test_bad_arguments_are_bad_request(args: list[str]) -> None:
    with pytest.raises(BadRequest) as caught:
        parse_arguments(args)
    assert caught.value.code is ErrorCode.BAD_REQUEST
    # The message never carries the raw dangerous characters back into a channel variable.
    assert "'1'='1" not in caught.value.message and "&pass" not in caught.value.message


@pytest.mark.parametrize(
    ("requested", "sent"),
    [
        ("_MIDCALL", "_MIDCALL"),
        ("_CONSENT_GIVEN_BY_CALLER_AT_IVR", "_CONSENT_GIVEN"),  # 14 characters, as api.php would cut
        ("_a|b|c", "_abc"),
        ("_MID\n", "_MID"),
        ("_MID\n\n", "_MID"),
        ("_ñandú", "_and"),
        ("<b>x</b>", "bxb"),
        ("_a'b\"c\\d;e", "_abcde"),
        ("_STOP_NOW", "__NOW"),
        ("_STSTOPOP", "_"),
        ("_status_start", "__"),
        ("", ""),
    ],
)
def test_stage_is_sanitised(requested: str, sent: str) -> None:
    stage = sanitize_stage(requested)
    assert stage.sent == sent
    assert stage.changed == (requested != sent)
    assert len(stage.sent.encode()) <= 14


def test_config_defaults_and_non_agent_url() -> None:
    config = config_from_mapping(BASE)
    assert config.non_agent_api_url == "https://dialer.example.com/vicidial/non_agent_api.php"
    assert config.call.deadline == 6.0
    assert config.agents.resolvers == ("argument", "channel_variable", "call_id", "session")
    assert "1234" not in repr(config)


@pytest.mark.parametrize(
    ("patch", "needle"),
    [
        ({"vicidial": {"api_url": "ftp://x/agc/api.php"}}, "api_url"),
        ({"vicidial": {"password": ""}}, "password"),
        ({"vicidial": {"source": "a"}}, "source"),
        ({"vicidial": {"source": "my-agi"}}, "source"),
        ({"vicidial": {"tiemout": 3}}, "unknown key"),
        ({"call": {"deadline": "6"}}, "number"),
        ({"call": {"deadline": 0}}, "deadline"),
        ({"agents": {"resolvers": ["argument", "guess"]}}, "resolver"),
        ({"agents": {"lookup": "ldap"}}, "lookup"),
        ({"log": {"target": "stdout"}}, "log.target"),
        ({"fastagi": {"allow": ["not-an-ip"]}}, "allow"),
        ({"extra": {}}, "section"),
    ],
)
def test_config_errors(patch: dict[str, dict[str, object]], needle: str) -> None:
    mapping = {section: dict(values) for section, values in BASE.items()}
    for section, values in patch.items():
        mapping.setdefault(section, {}).update(values)
    with pytest.raises(ConfigError) as caught:
        config_from_mapping(mapping)
    assert needle in caught.value.message
    assert caught.value.code is ErrorCode.CONFIG


def test_config_warns_on_plain_http_to_remote_host_only() -> None:
    remote = config_from_mapping({"vicidial": {**BASE["vicidial"], "api_url": "http://10.1.2.3/agc/api.php"}})
    assert any("plain http" in w for w in remote.warnings)
    local = config_from_mapping({"vicidial": {**BASE["vicidial"], "api_url": "http://127.0.0.1:8089/agc/api.php"}})
    assert not local.warnings


def test_config_file_missing_unreadable_bad_toml_and_world_readable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(str(tmp_path / "nope.toml"))
    bad = tmp_path / "bad.toml"
    bad.write_text("[vicidial\napi_url = 1\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(str(bad))
    good = tmp_path / "vicirec.toml"
    good.write_text(
        '[vicidial]\napi_url = "https://d/agc/api.php"\nuser = "6666"\npassword = "s3cret"\n'
    )
    good.chmod(0o644)
    config = load_config(environ={"VICIREC_CONFIG": str(good)})
    assert any("readable by every user" in w for w in config.warnings)
    good.chmod(0o640)
    assert not load_config(str(good)).warnings
    if os.getuid() != 0:  # root reads anything
        good.chmod(0o000)
        with pytest.raises(ConfigError, match="not readable"):
            load_config(str(good))


def test_the_database_password_is_masked_in_the_log_once_the_mysql_lookup_reads_it(tmp_path: Path) -> None:
    from vicirec import logs
    from vicirec.runtime import build_service

    conf = tmp_path / "astguiclient.conf"
    conf.write_text("VARDB_server => 127.0.0.1\nVARDB_database => asterisk\nVARDB_user => cron\n"
                    "VARDB_pass => s3cretDbPw\nVARserver_ip => 10.10.10.15\n")
    log_path = tmp_path / "vicirec.log"
    config = config_from_mapping({
        **BASE,
        "agents": {"lookup": "mysql", "astguiclient_conf": str(conf)},
        "log": {"target": "file", "path": str(log_path)},
    })
    from vicirec.redaction import Redactor

    logs.configure(config.log, Redactor([config.vicidial.password]))
    try:
        build_service(config)
        logs.get_logger().error("mysql_failed", error="login s3cretDbPw refused", api="pw 1234")
        # A reconfiguration (SIGHUP) keeps masking what was learnt.
        logs.configure(config.log, Redactor([config.vicidial.password]))
        logs.get_logger().error("after_reload", detail="s3cretDbPw")
    finally:
        logs.configure_fallback()
    text = log_path.read_text()
    assert "s3cretDbPw" not in text and "1234" not in text
    assert text.count("<redacted>") == 3
