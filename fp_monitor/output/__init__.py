"""Presentation: tables on a terminal (rich) or plain when piped, the versioned JSON contracts,
CSV, the CI reports (JUnit, markdown, annotations) and the Prometheus exposition.

Reads only the records it is given: it never opens the history or the network.
"""
