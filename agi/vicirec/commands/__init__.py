"""The ``vicirec`` command line: ``cli`` dispatches to one module per subcommand (``check``,
``demo``, ``audit`` …), each imported only when it runs. The only modules that print.

May import anything in vicirec; nothing else in vicirec imports ``commands``.
"""
