"""The domain: what fpmon knows and decides, as pure functions over frozen records.

Records (models), detection, learning, stats, timelines, the hash chain and the typed errors
with their exit codes. No I/O, no clock, no network, no rich: everything here is computed from
its arguments, so it is tested without a server or a file. Imports nothing outside `domain`.
"""
