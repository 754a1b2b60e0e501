"""tttkd: test-time training for 3D semantic segmentation by distillation from 2D foundation models.

The library lives in the subpackages ``tttkd.pipeline`` (prep and cache), ``tttkd.model``
(3D network and training), ``tttkd.adapt`` (test-time training and evaluation) and
``tttkd.cli`` (commands).
"""

__version__ = "0.1.0"
