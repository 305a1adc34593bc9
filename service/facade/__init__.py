"""`/v1`: the service in OpenAI's own API shape (DESIGN 13).

Code written for the OpenAI SDK (or plain curl against api.openai.com) works
by changing `base_url`. Every route here is a translation onto the same use
cases the native API calls: a file is a dataset, a fine-tuning job is a job,
a chat completion goes through the same model targets; tenants, idempotency,
rate limits and webhooks are the native ones. Only the shapes differ: OpenAI's
objects, unix timestamps, `{"object": "list", ...}` pages and the error body
`{"error": {"message", "type", "param", "code"}}`.
"""
