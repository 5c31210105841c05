"""The online server: repository of models, protocol front-ends, scheduling, auth and metrics."""
