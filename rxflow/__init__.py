"""rxflow: backpressured ReactiveX pipelines for trio and asyncio."""

from rxflow import errors

__all__ = ["errors"]
