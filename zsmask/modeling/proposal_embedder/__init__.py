"""Proposal embedders: class embeddings of mask proposals from a source other than the decoder's queries."""
from .build import PROPOSAL_EMBEDDER_REGISTRY, build_proposal_embedder
from .clip_semantic_decoder import CLIPSemanticDecoder

__all__ = ["PROPOSAL_EMBEDDER_REGISTRY", "build_proposal_embedder", "CLIPSemanticDecoder"]
