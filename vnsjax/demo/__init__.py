"""Interactive web demo: prompt SAM / HQ-SAM / VNS-SAM models on one image, masks side by side (docs/demo.md)."""
