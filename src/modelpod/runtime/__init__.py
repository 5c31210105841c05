"""Loading and running packages in process."""
