"""Lifecycle email: templates rendered with the brand (transports live beside them)."""

from stripe_lifecycle.mail.templates import Brand, RenderedEmail, TemplateNotFound, TemplateRenderer

__all__ = ["Brand", "RenderedEmail", "TemplateNotFound", "TemplateRenderer"]
