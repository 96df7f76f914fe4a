"""Faces: detection, alignment, extraction, blending, video I/O and provenance for face swap.

Only `training` (augmentation and loss) uses torch directly; the other submodules work on numpy
arrays with OpenCV and Pillow. (Reading images goes through `lensforge.data.imageio`, whose
package import currently loads torch as well.) The task layer (`lensforge.tasks.faceswap`) and
the network (`lensforge.models.faceswap`) build on these.
"""
