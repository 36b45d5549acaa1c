"""Lightning callbacks of the tasks: samples and pictures drawn during training.

Pictures are drawn off screen: matplotlib's file-only Agg backend is chosen here, before any
callback module imports pyplot.
"""

import matplotlib

matplotlib.use("Agg")
