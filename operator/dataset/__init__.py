"""Dataset: licence policy (resolve), the preparation Job (build), its reconcile."""
