"""Capstan operator: kopf handlers, reconcilers and pure builders."""
