"""Code generation: checked model → readable PyTorch module source."""
