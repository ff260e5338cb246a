"""Notifications: which events a check sets off, and their delivery to webhooks and commands.

Imports the layers below (`domain`, `config`, `net`, `store`); never presentation.
"""
