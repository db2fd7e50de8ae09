"""Training: fine-tune generators and train verifiers (needs the export extra)."""
