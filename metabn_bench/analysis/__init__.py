"""Analysis: CAM pictures, costs, Meta-BN ablation and diagnostics."""
