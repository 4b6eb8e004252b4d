"""Reusable test doubles: the VICIdial simulator (a real HTTP server speaking api.php's bytes) and
the fake Asterisk (runs an AGI over real pipes or a FastAGI socket), with the glue to drive
vicirec's own entry points under them (``harness``).

May import anything in vicirec except ``commands``; nothing on a call's path imports it.
"""
