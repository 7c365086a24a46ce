"""``python -m axal.napari <folder> [hydra overrides...]``: napari with the axal widget open."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    import napari

    from axal.napari.widget import AnnotateWidget

    args = list(sys.argv[1:] if argv is None else argv)
    folder = args.pop(0) if args and "=" not in args[0] else None
    viewer = napari.Viewer(title="axal annotate")
    widget = AnnotateWidget(viewer, folder=folder, overrides=args)
    viewer.window.add_dock_widget(widget, name="axal annotate", area="right")
    napari.run()


if __name__ == "__main__":
    main()
