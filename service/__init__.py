"""Fine-tuning service: the HTTP edge and everything the API and worker share."""

__version__ = "0.1.0"
