"""The consent / PCI audit trail: writing one record per call (``trail``, on the call's path) and
reading, filtering and formatting it (``search``, for ``vicirec audit``). Neither prints.

May import: ``errors``, ``config``, ``shared_files``. Nothing of the call path imports ``search``.
"""
