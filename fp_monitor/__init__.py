"""fpmon: monitor the backend fingerprints (system_fingerprint) of OpenAI-compatible LLM APIs."""

__version__ = "0.1.0"
