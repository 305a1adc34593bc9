"""Every Redis key the service writes, in one place.

All keys share a prefix (`KEY_PREFIX`, default `fts`) so one Redis can be
shared with other tools and our data can be found and inspected as a whole.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str = "fts"

    # Worker liveness: sorted set of worker id -> last heartbeat (unix seconds).
    @property
    def workers(self) -> str:
        return f"{self.prefix}:workers"

    def turn(self, name: str) -> str:
        """Held for a while by the one process doing a periodic chore (a file sweep)."""
        return f"{self.prefix}:turn:{name}"

    def ping(self, token: str) -> str:
        return f"{self.prefix}:ping:{token}"

    # Datasets
    def dataset(self, dataset_id: str) -> str:
        return f"{self.prefix}:dataset:{dataset_id}"

    def datasets_by_tenant(self, tenant: str) -> str:
        return f"{self.prefix}:tenant:{tenant}:datasets"

    @property
    def validating_datasets(self) -> str:
        """Ids of datasets the worker still has to validate (what the reconciler walks)."""
        return f"{self.prefix}:datasets:validating"

    # Jobs
    def job(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}"

    def job_events(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}:events"

    def job_event_ids(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}:event-ids"

    def job_checkpoints(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}:checkpoints"

    def job_metrics(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}:metrics-by-step"

    def jobs_by_tenant(self, tenant: str) -> str:
        return f"{self.prefix}:tenant:{tenant}:jobs"

    def tenant_models(self, tenant: str) -> str:
        """Tuned models the tenant's jobs produced (the models it may chat with),
        a hash of model -> the provider that trained (and serves) it."""
        return f"{self.prefix}:tenant:{tenant}:tuned-models"

    def jobs_by_dataset(self, dataset_id: str) -> str:
        return f"{self.prefix}:dataset:{dataset_id}:jobs"

    @property
    def active_jobs(self) -> str:
        return f"{self.prefix}:jobs:active"

    def job_by_upstream(self, provider: str, upstream_id: str) -> str:
        """Our job id for a provider's job id (provider webhooks name theirs)."""
        return f"{self.prefix}:upstream-job:{provider}:{upstream_id}"

    def job_poke(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}:poke"

    # Following jobs (service.store.following)
    @property
    def follow_due(self) -> str:
        """Sorted set: job id -> when its next sync step is due (unix ms)."""
        return f"{self.prefix}:follow:due"

    @property
    def follow_claimed(self) -> str:
        """Sorted set: job id -> when the claim of the worker running its step lapses."""
        return f"{self.prefix}:follow:claimed"

    @property
    def follow_poked(self) -> str:
        """Set: claimed jobs asked to be synced again as soon as their step ends."""
        return f"{self.prefix}:follow:poked"

    # Evaluations
    def evaluation(self, evaluation_id: str) -> str:
        return f"{self.prefix}:evaluation:{evaluation_id}"

    def evaluation_rows(self, evaluation_id: str) -> str:
        """Hash of example index -> the scored row."""
        return f"{self.prefix}:evaluation:{evaluation_id}:rows"

    def evaluations_by_tenant(self, tenant: str) -> str:
        return f"{self.prefix}:tenant:{tenant}:evaluations"

    @property
    def active_evaluations(self) -> str:
        """Ids of evaluations not finished (or not yet announced): what the reconciler walks."""
        return f"{self.prefix}:evaluations:active"

    # Webhooks
    def endpoint(self, endpoint_id: str) -> str:
        return f"{self.prefix}:webhook:{endpoint_id}"

    def endpoints_by_tenant(self, tenant: str) -> str:
        return f"{self.prefix}:tenant:{tenant}:webhooks"

    def endpoints_version(self, tenant: str) -> str:
        """A counter raised by every change to the tenant's endpoints: a write that
        announces an event checks it still holds what the announcer's copy was read at."""
        return f"{self.prefix}:tenant:{tenant}:webhooks:version"

    def delivery(self, delivery_id: str) -> str:
        return f"{self.prefix}:delivery:{delivery_id}"

    def delivery_attempts(self, delivery_id: str) -> str:
        return f"{self.prefix}:delivery:{delivery_id}:attempts"

    def deliveries_by_endpoint(self, endpoint_id: str) -> str:
        return f"{self.prefix}:webhook:{endpoint_id}:deliveries"

    @property
    def pending_deliveries(self) -> str:
        return f"{self.prefix}:deliveries:pending"

    def tenant_job_webhook_secret(self, tenant: str) -> str:
        """The tenant's signing secrets for jobs' own `webhook_url` deliveries."""
        return f"{self.prefix}:tenant:{tenant}:job-webhook-secret"

    # Per-tenant concurrency slots (service.store.slots)
    def upload_slots(self, tenant: str) -> str:
        return f"{self.prefix}:tenant:{tenant}:uploads"

    def delivery_slots(self, tenant: str) -> str:
        return f"{self.prefix}:tenant:{tenant}:delivering"

    # Idempotency and rate limits
    def idempotency_entry(self, scoped_key: str) -> str:
        """`scoped_key` is tenant:route:Idempotency-Key."""
        return f"{self.prefix}:idem:{scoped_key}"

    def rate(self, tenant: str, window: int) -> str:
        return f"{self.prefix}:rate:{tenant}:{window}"
