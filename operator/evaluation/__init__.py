"""Evaluation: references (resolve), the evaluation Job (build), its reconcile."""
