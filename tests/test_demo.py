"""``vicirec demo``: it works, and it says which settings make it work that an installed config does
not have (a working demo must never pass for a working default)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from vicirec.commands.demo import DEPARTURES
from vicirec.config import Config

pytestmark = pytest.mark.slow


def test_demo_runs_and_prints_every_setting_it_departs_from_the_installed_defaults_with() -> None:
    res = subprocess.run([sys.executable, "-m", "vicirec", "demo", "--screen-delay", "0.2"], check=False,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    out = res.stdout
    head = out[:out.index("== ")]  # said before the first call is played
    assert "a working demo is not a working default" in head
    assert "[agents] require_corroboration = false   (installed: true)" in head
    assert '[agents] lookup = "http"   (installed: mysql on a VICIdial server)' in head
    assert "NO_AGENT" in head
    for section, key, _value, _installed, why in DEPARTURES:
        assert f"[{section}] {key} = " in head and why in head


def test_each_departure_differs_from_what_an_install_writes() -> None:
    defaults = Config()
    for section, key, value, installed, _why in DEPARTURES:
        assert value != installed, (section, key)
        if isinstance(installed, bool):
            assert getattr(getattr(defaults, section), key) == installed, (section, key)
