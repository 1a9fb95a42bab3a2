"""Images: pull from registries and peers, import archives, unpack layers, keep a blob cache."""
