"""Context-aware video (the paper's section 3.2): relevance -> per-region QP -> ROI encoding."""
