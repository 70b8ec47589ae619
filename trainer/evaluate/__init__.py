"""The Evaluation workload: perplexity, tasks, bias probes, gates and a model card
(`python -m capstan_trainer.evaluate -f evaluation.yaml`)."""
