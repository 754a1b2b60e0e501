"""Sparse-convolution backends behind one narrow interface."""
