"""Offline datasets: generation from real battles, validation, columnar caching."""

from __future__ import annotations
