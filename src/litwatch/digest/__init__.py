"""Digests: group undelivered events into items and sections (pure, `group`), and
render them to a text and an HTML part from package templates (`render`)."""

from .group import DigestData, Item, Section, group
from .render import Renderer

__all__ = ["DigestData", "Item", "Renderer", "Section", "group"]
