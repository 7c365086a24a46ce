"""axal's napari plugin: the annotate loop (suggestions, correction, next round) in napari.

Install with ``pip install 'axal[napari]'``; open with ``python -m axal.napari <folder>`` or
Plugins -> axal. The widget is a face over :func:`axal.annotate.annotate`, not a second loop.
"""

from axal.napari.widget import AnnotateWidget, make_widget

__all__ = ["AnnotateWidget", "make_widget"]
