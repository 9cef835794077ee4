"""Translators between the client's dialect (OpenAI Chat Completions) and each upstream's. Pure."""

from __future__ import annotations
