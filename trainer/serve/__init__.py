"""The Deployment workload: an OpenAI-compatible HTTP server over the generation engine
(`python -m capstan_trainer.serve --model URI`)."""
