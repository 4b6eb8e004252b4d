"""``python -m vicirec.testing.fake_asterisk``: see :mod:`vicirec.testing.fake_asterisk.cli`."""

import sys

from vicirec.testing.fake_asterisk.cli import main

if __name__ == "__main__":
    sys.exit(main())
