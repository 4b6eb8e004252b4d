"""Finding the agent: which logged-in VICIdial agent is on the call with this caller.

Holds the resolver chain (``chain``), the resolvers, what the channel knows (``call_facts``),
corroboration of caller-controlled facts, phone/device parsing, the static map, the lookup backends
(``http_directory``, ``mysql_directory``, the daemon's ``cache``) and ``/etc/astguiclient.conf``;
``recording_db`` reads ``external_recording`` and ``recording_log`` over the mysql connection (for
confirming and verifying a START/STOP).

May import: ``errors``, ``config``, ``deadline``, ``redaction``, ``request``, ``asterisk`` and
``vicidial``. Never ``engine``, ``fastagi``, ``audit``, ``commands`` or ``testing``.
"""
