"""The device glue shipped with edgeexit: the C++ runner (executorch/), the Android module (android/), the Swift
package (ios/) and the Jetson notes (jetson/), copied out for a user's build by `edgeexit glue --out DIR`."""

from edgeexit.glue.copyout import TREES, GlueCopy, copy_glue, glue_root

__all__ = ["TREES", "GlueCopy", "copy_glue", "glue_root"]
