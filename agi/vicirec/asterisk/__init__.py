"""The Asterisk side: the AGI codec (``codec``: bytes in, typed values out, no I/O) and the
channel that carries it over a pipe or socket (``channel``).

May import only: ``errors``, ``config``, ``deadline``, ``redaction``.
"""
