"""edgeexit: turn an image classifier into an early-exit network and ship it to edge devices."""

__version__ = "0.1.0"
