"""``vicirec check``'s questions to VICIdial, asked so that they cost nothing and act on no one.

* The agent API: exactly one ``function=recording&value=STATUS`` for an agent user that cannot
  exist, never retried. api.php checks the login, the API access and the ``recording`` permission
  before it looks for the agent, so ``agent_user is not logged in`` proves all three; a wrong
  password costs one of the ten failed logins before VICIdial's 15-minute lock-out.
* The agent lookup: ``lookup = "http"``: one ``logged_in_agents`` request (view_reports, user
  level), asked only once the login is proven; ``lookup = "mysql"``: the resolver's one SELECT
  with astguiclient.conf's credentials.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from vicirec.agents.lookups import build_directory
from vicirec.commands.check_files import Finding, error, ok, warning
from vicirec.config import Config
from vicirec.deadline import Deadline
from vicirec.errors import ErrorCode, VicirecError
from vicirec.redaction import Redactor
from vicirec.vicidial.client import VicidialClient
from vicirec.vicidial.responses import Action

#: No VICIdial user can be named this (20 characters of api.php's user filter, with dashes).
PROBE_AGENT = "vicirec-check-nobody"
#: Hosts of the template and of the documentation (RFC 2606): never asked.
EXAMPLE_DOMAINS = ("example.com", "example.net", "example.org")


def template_host(config: Config) -> str:
    """The api_url's host when it is still the template's example, else ``""``."""
    host = (urlsplit(config.vicidial.api_url).hostname or "").lower()
    if any(host == domain or host.endswith("." + domain) for domain in EXAMPLE_DOMAINS):
        return host
    return ""


def vicidial_findings(config: Config) -> list[Finding]:
    found: list[Finding] = []
    host = template_host(config)
    if host:
        return [error(f"vicidial.api_url still names the template's {host}: set it to your VICIdial's "
                      "agc/api.php (and user and password to its API user's); VICIdial was not asked")]
    client = VicidialClient(config, redactor=Redactor([config.vicidial.password]))
    agent_api = _agent_api(config, client)
    found.append(agent_api)
    if config.agents.lookup == "http":
        if agent_api.level.value == "OK":
            found.append(_http_lookup(config, client))
        else:
            found.append(warning(f"agent lookup (non-agent API {config.non_agent_api_url}): not asked "
                               "until the agent API login works (a failed login would count twice)"))
    else:
        found.append(_mysql_lookup(config, client))
    return found


def _deadline(config: Config) -> Deadline:
    return Deadline(config.call.deadline)


def _agent_api(config: Config, client: VicidialClient) -> Finding:
    url, user = config.vicidial.api_url, config.vicidial.user
    try:
        reply = client.recording(Action.STATUS, PROBE_AGENT, _deadline(config), once=True)
    except VicirecError as failure:
        if failure.code is ErrorCode.NOT_LOGGED_IN:
            return ok(f"agent API {url}: user {user} logs in, has API access and the recording function "
                      f"(STATUS for {PROBE_AGENT}: agent_user is not logged in)")
        return error(f"agent API {url}: {failure.message}: {_what_to_do(config, failure, 'agent')}")
    return ok(f"agent API {url}: user {user} logs in, has API access and the recording function "
              f"(STATUS answered {reply.line.reason!r})")


def _http_lookup(config: Config, client: VicidialClient) -> Finding:
    url = config.non_agent_api_url
    try:
        agents = client.logged_in_agents(_deadline(config), once=True)
    except VicirecError as failure:
        return error(f"agent lookup (non-agent API {url}): {failure.message}: "
                     f"{_what_to_do(config, failure, 'lookup')}")
    return ok(f"agent lookup (non-agent API {url}): logged_in_agents answered ({len(agents)} agents "
              "logged in)")


def _mysql_lookup(config: Config, client: VicidialClient) -> Finding:
    secrets = [config.vicidial.password]
    try:
        directory, _server_ip = build_directory(config, client, secrets)
        rows = directory.logged_in_agents(_deadline(config))
    except VicirecError as failure:
        shown = Redactor(secrets).text(failure.message)
        return error(f'agent lookup (lookup = "mysql", {config.agents.astguiclient_conf}): {shown}: '
                     "check VARDB_* there and the database user's SELECT grant on vicidial_live_agents")
    return ok(f'agent lookup (lookup = "mysql"): the SELECT on vicidial_live_agents ran ({len(rows)} rows)')


def _what_to_do(config: Config, failure: VicirecError, step: str) -> str:
    user = config.vicidial.user
    code = failure.code
    if code is ErrorCode.AUTH and "locked out" in failure.message:
        return ("wait for VICIdial's 15-minute lock-out to end, then make sure [vicidial] password is right "
                "before anything logs in again")
    if code is ErrorCode.AUTH and ("IPBLOCK" in (failure.raw or "") or "this address" in failure.message):
        return f"add this server's address to the API IP list of user {user}'s user group in VICIdial"
    if code is ErrorCode.AUTH:
        return ("set [vicidial] user and password to a VICIdial API user's (this check cost one of the ten "
                "failed logins before a 15-minute lock-out, and is never retried)")
    if code is ErrorCode.PERMISSION and step == "lookup":
        return (f"in VICIdial, give user {user} view_reports=1, user level 7 or more, and logged_in_agents "
                'in api_allowed_functions (or ALL_FUNCTIONS); or use lookup = "mysql"')
    if code is ErrorCode.PERMISSION:
        return (f"in VICIdial, give user {user} Agent API Access (vdc_agent_api_access=1) and recording in "
                "api_allowed_functions (or ALL_FUNCTIONS); the system setting Agent API Active must be on")
    if code is ErrorCode.UNREACHABLE and "TLS" in failure.message:
        return ("VICIdial's certificate is not trusted here: set vicidial.ca_bundle to the CA that signed "
                "it, or fix the certificate (host name, expiry)")
    if code is ErrorCode.UNREACHABLE:
        return "check vicidial.api_url (host, port, https), DNS, and the firewall from this server"
    if code is ErrorCode.TIMEOUT:
        return "VICIdial answers too slowly for call.deadline; check the web server and the network"
    if code is ErrorCode.CONFIG:
        return "set vicidial.source to 2-20 letters or digits"
    if step == "lookup":
        return "is non_agent_api_url the path to vicidial/non_agent_api.php?"
    return "is api_url the path to VICIdial's agc/api.php?"
