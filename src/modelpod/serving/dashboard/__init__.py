"""The dashboard at ``/ui``: models, live charts, recent errors, events and a try-it form, served
by the server itself from files inside the package (no CDN, no Prometheus needed)."""
