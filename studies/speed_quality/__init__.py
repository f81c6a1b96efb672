"""Does speed cost quality? The README's Omniglot distillation at fp32, at bf16 + channels-last and
from a teacher cache: ``python -m studies.speed_quality --help``; records in ``results/``."""
