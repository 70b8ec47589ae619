"""TrainingRun: references (resolve), the torchrun gang's children (build), its reconcile."""
