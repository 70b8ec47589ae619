"""Deployment: which model to serve (resolve), serving children (build), canary steps (canary),
canary analysis from the pods' metrics (analysis), its reconcile."""
