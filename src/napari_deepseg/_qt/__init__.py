"""napari widgets: the only Qt code of napari-deepseg. Thin layers over the public engine API."""
