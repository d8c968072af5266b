"""Sans-IO protocol dissectors: bytes and frame numbers in, events out."""
