"""assay.flows: Prefect flows (pipeline, batch, stream, watch), events, the demo and the `assay` CLI."""
