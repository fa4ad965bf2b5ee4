"""Running across processes and machines: process state, FSDP on CPU ranks and sharded
held-out generation, cluster jobs through ``accelerate launch``, sweep summaries."""
