"""The submission service: jobs and their problems over HTTP, per tenant, behind API keys."""
