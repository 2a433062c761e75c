"""Step 2 trial worker: runs one scorer meta-optimisation trial on a rig with numpy, scipy and torch.

It must never import the coordinator: rigs carry only the worker's own dependencies.
"""

VERSION = "3.5.0"
