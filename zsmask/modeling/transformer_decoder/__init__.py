"""Transformer decoders (registry ``TRANSFORMER_DECODER_REGISTRY``)."""
from .build import TRANSFORMER_DECODER_REGISTRY, build_transformer_decoder
from .masked_attention_decoder import MultiScaleMaskedTransformerDecoder
from .refined_proposal_decoder import MutuallyRefinedProposalDecoder

__all__ = ["TRANSFORMER_DECODER_REGISTRY", "build_transformer_decoder", "MultiScaleMaskedTransformerDecoder",
           "MutuallyRefinedProposalDecoder"]
