"""HTTP policy shared by the probe, the notifiers, the proxy and the intake: TLS, retries and
their delays, HTTP status to error kind, loopback checks, and the redaction of secrets.

Imports only `domain`.
"""
