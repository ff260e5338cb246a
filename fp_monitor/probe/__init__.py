"""The one-token probe: the minimal request per target and sample, with retries, and the
response turned into an Observation.

Imports `domain`, `config` and `net`.
"""
