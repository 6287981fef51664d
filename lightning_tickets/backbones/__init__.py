"""Vision-and-language backbones sharing one interface (:class:`VLBackbone` -> :class:`BackboneOutput`)."""

from lightning_tickets.backbones.base import BackboneOutput, VLBackbone, resolve_local_path
from lightning_tickets.backbones.uniter import LoadReport, Uniter

__all__ = ["BackboneOutput", "LoadReport", "Uniter", "VLBackbone", "resolve_local_path"]
