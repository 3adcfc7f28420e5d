"""edgeexit."""
