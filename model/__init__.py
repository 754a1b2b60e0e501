"""The 3D network: sparse-convolution backends, MinkUNet, heads, losses, checkpoints, training."""
