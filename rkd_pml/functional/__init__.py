"""Pure tensor math of relational distillation: no PML, no models."""
