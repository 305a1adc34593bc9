"""A faithful local stand-in for OpenAI's files, uploads, fine-tuning, models and chat APIs.

Run it with `python -m simulator --port 8100`, embed it with `simulator.app.create_app`,
or start it inside tests with `simulator.testing.running_simulator`.
"""
