"""Which lookup backend lists the logged-in agents (``agents.lookup``), built from config."""

from __future__ import annotations

from vicirec.agents.chain import AgentDirectory
from vicirec.agents.http_directory import HttpDirectory
from vicirec.config import Config
from vicirec.redaction import Redactor
from vicirec.vicidial.client import VicidialClient


def build_directory(
    config: Config, client: VicidialClient, secrets: list[str], *, daemon: bool = False
) -> tuple[AgentDirectory, str]:
    """The configured lookup backend (cached in the daemon) and this server's address, if known.

    The mysql backend reads astguiclient.conf here and adds the database password to ``secrets``.
    """
    directory: AgentDirectory
    server_ip = ""
    if config.agents.lookup == "mysql":
        from vicirec.agents.astguiclient import load_astguiclient_conf
        from vicirec.agents.mysql_directory import MysqlDirectory

        database = load_astguiclient_conf(config.agents.astguiclient_conf)
        secrets.append(database.password)
        directory = MysqlDirectory(database, config, redactor=Redactor(secrets))
        server_ip = database.server_ip
    else:
        directory = HttpDirectory(client)
    if daemon and config.agents.cache_seconds > 0:
        from vicirec.agents.cache import CachedDirectory

        directory = CachedDirectory(directory, config.agents.cache_seconds)
    return directory, server_ip
