"""What the synthetic writers write unless told otherwise.

The writers' keyword defaults and ``tttkd-synth --help`` both read these, so each default is
written once (the CLI does not import a writer until it runs one).
"""

from __future__ import annotations

NUM_SCENES = 2  # ScanNet scans, S3DIS rooms, Matterport3D regions, Pointcept scenes
VIEWS = {"scannet": 4, "s3dis": 4, "matterport3d": 6}  # posed frames per scene
IMAGE_SIZE = {  # colour images, (width, height) pixels
    "scannet": (162, 121),
    "s3dis": (128, 128),
    "matterport3d": (160, 128),
}
