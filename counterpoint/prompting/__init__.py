"""Few-shot prompt templates and select-prompt-generate pipelines."""

__all__: list[str] = []
