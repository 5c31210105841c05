"""Framework adapters, one module per platform; each imports its framework only when used."""
