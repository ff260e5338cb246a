"""Configuration: `fpmon.toml` read and validated into frozen settings, the provider presets,
and `fpmon init`'s starter file.

Every user-facing key, default and preset is defined here, once. Imports only `domain`.
"""
