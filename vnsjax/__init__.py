"""vnsjax: SAM, HQ-SAM and VNS-SAM in JAX / Flax NNX."""

from vnsjax.build_sam import MODEL_CONFIGS, ModelConfig, build_sam
from vnsjax.model_dir import load_model, save_model
from vnsjax.predictors.sam_predictor import SamPredictor
from vnsjax.predictors.vns_predictor import VnsPredictor

__all__ = ["MODEL_CONFIGS", "ModelConfig", "SamPredictor", "VnsPredictor", "build_sam", "load_model", "save_model"]
