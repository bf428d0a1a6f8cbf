"""Analyses of trained models: speed and FLOPs, robustness to corruptions, effective receptive fields,
attention and explanation maps, the ISR sweep, LSeg label studies and text tables."""
