"""The FastAGI daemon, ``vicirec serve``: listener and accept loop (``server``), one call's session
(``session``), the socket transport, the reporter thread that sets variables, sd_notify, the held
consents of ``CONSENT`` and their deferred STARTs (``deferred``), and the daemon's start-up, reload
and shutdown (``daemon``).

May import the core (``engine``, ``runtime``, ``reporting``, ``config``, ``logs`` …) and the
``asterisk``/``vicidial``/``agents`` wings. Never ``commands`` or ``testing``.
"""
