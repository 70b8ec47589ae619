"""Capstan workloads: everything that runs inside pods."""
