"""Batched selection of in-context demonstrations from a pool."""

__all__: list[str] = []
