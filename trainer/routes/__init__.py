"""The HTTP routes, one module per OpenAI resource (plus health)."""
