"""Tools for rehearsing and testing without a provider: the fake OpenAI-compatible API and
`fpmon demo`, which runs the real pipeline against it.
"""
