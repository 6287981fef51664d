"""Vision-and-language backbones sharing one interface (:class:`VLBackbone` -> :class:`BackboneOutput`)."""

from lightning_tickets.backbones.base import BackboneOutput, VLBackbone, resolve_local_path
from lightning_tickets.backbones.lxmert import Lxmert
from lightning_tickets.backbones.uniter import LoadReport, Uniter
from lightning_tickets.backbones.vilt import Vilt

__all__ = ["BackboneOutput", "LoadReport", "Lxmert", "Uniter", "VLBackbone", "Vilt", "resolve_local_path"]
