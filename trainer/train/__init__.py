"""The TrainingRun workload: elastic FSDP2 training under torchrun, streaming token shards and
checkpointing to object storage (`torchrun ... -m capstan_trainer.train -f trainingrun.yaml`)."""
