"""The VICIdial side: the api.php response parser (``responses``: bytes in, typed values out, no
I/O), the stage sanitiser, the HTTP client and its circuit breaker.

May import only: ``errors``, ``config``, ``deadline``, ``redaction`` (and the package version).
"""
