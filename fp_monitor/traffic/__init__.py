"""An application's own traffic: the recording clients and their stream tap, and `fpmon proxy`.

Each answer goes through the same detection and recording as a probe (the `check` use case).
"""
