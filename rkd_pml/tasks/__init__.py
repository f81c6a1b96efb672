"""timm training tasks: relational distillation of plain timm classifiers."""

from .relational import RelationalDistillationTask
from .teacher import EmbeddingModelTeacher, resolve_teacher

__all__ = ["EmbeddingModelTeacher", "RelationalDistillationTask", "resolve_teacher"]
