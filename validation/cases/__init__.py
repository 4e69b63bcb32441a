"""Validation case modules; each exposes ``CASES`` (a list of :class:`validation.framework.Case`)."""
