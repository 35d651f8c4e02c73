"""The reference partner: an HTTPS endpoint that takes aamdest's documents the way a demanding partner would.

It runs as `manage.py receiver` (CONTRACT §6) for demos, benchmarks and the tests. Its modules:
`certificates` (a throwaway CA and server certificate, or given files; the tests' local
partners use the same code), `documents` (is a body a document of CONTRACT §1?), `verification`
(HMAC signatures and the OAuth client-credentials tokens it issues, CONTRACT §3) and `server`
(the threaded HTTP/1.1 server that checks, prints and acknowledges each document).
It sends nothing and stores nothing: no models, no migrations.
"""
