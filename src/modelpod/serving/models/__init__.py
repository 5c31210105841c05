"""Model management: what is served (repository), its settings, loading it, and keeping it in step with PATH."""
