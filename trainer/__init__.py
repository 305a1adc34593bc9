"""The self-hosted LoRA fine-tuning server: OpenAI's files, fine-tuning, models and chat APIs."""
