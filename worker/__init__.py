"""The arq worker: uploads, job creation, following jobs, webhook delivery."""
