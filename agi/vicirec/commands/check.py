"""``vicirec check``: validate a config file, and the files it names, the way the AGI will read them."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Optional

from vicirec.config import config_path, load_config
from vicirec.errors import ConfigError

# Warnings that make `check` fail: settings that work but expose the API password.
FATAL_WARNINGS = ("readable by every user",)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="vicirec check", description=__doc__)
    parser.add_argument("--config", help="default: $VICIREC_CONFIG or /etc/vicirec/vicirec.toml")
    options = parser.parse_args(argv)
    path = config_path(options.config)
    try:
        config = load_config(options.config)
    except ConfigError as error:
        print(f"{path}: ERROR: {error.message}", file=sys.stderr)
        return 1
    try:
        # What the AGI builds next: reads agents.map_file and astguiclient.conf, finds the driver.
        from vicirec.runtime import build_service

        build_service(config)
    except ConfigError as error:
        print(f"{path}: ERROR: {error.message}", file=sys.stderr)
        return 1
    failed = False
    for warning in config.warnings:
        fatal = any(marker in warning for marker in FATAL_WARNINGS)
        failed = failed or fatal
        print(f"{path}: {'ERROR' if fatal else 'WARNING'}: {warning}", file=sys.stderr)
    if failed:
        return 1
    print(f"{path}: OK (agent API {config.vicidial.api_url}, resolvers {', '.join(config.agents.resolvers)})")
    return 0
