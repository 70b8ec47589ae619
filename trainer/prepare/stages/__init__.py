"""One module per stage of `capstan_api.preparation.STAGES`; each has `run(ctx) -> dict`."""
