"""Capstan API models (group capstan.dev, version v1alpha1).

Imports nothing but pydantic and the standard library: the trainer imports it too.
"""
