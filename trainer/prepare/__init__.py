"""The Dataset workload: read, licence-check, clean, deduplicate, redact and tokenize text into
shards with a manifest and a datasheet (`python -m capstan_trainer.prepare -f dataset.yaml`)."""
