"""Batched generation over a KV cache, shared by serving and by the evaluation's exact-match
tasks: the engine, its cache, sampling and incremental detokenization."""
