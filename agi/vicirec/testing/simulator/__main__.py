"""``python -m vicirec.testing.simulator``: see :mod:`vicirec.testing.simulator.cli`."""

from vicirec.testing.simulator.cli import main

if __name__ == "__main__":
    raise SystemExit(main(prog="python -m vicirec.testing.simulator"))
