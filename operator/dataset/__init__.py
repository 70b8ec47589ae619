"""Dataset: licence policy (resolve), the ConfigMap and stage Jobs (build), the workers' progress
in status (progress), the reconcile walking the stages (reconcile)."""
