"""`python -m edgeexit ARGS` is `edgeexit ARGS`; under torchrun: `torchrun --nproc_per_node 4 -m edgeexit train ARGS`."""

from edgeexit.cli import app

app()
