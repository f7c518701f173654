"""The `shapes` model: synthetic clips, its training script and the analytic prompt-adherence metric."""
