"""Defaults of the limits that more than one module needs: settings declare them, the decoding and the
classifier default to them, so a change is made here once. No heavy imports: the web reads it too."""

MAX_PIXELS = 40_000_000  # per image, checked from the header before decoding
# Below this on either side an image is refused, not scored: tracking pixels, spacers, slivers. The default
# model's coarsest band has a period of 8 px, so a side shorter than two periods holds no measurement of it,
# and a crop mirrored up from a few pixels reads the mirroring, not the file.
MIN_SIDE = 16
MAX_JPEG_SCANS = 100  # passes of a progressive JPEG: encoders write about 10; thousands are a decoding trap
BATCH_SIZE = 128  # images per task, about this many crops per forward pass
MAX_TITLE = 200  # characters of a job's title: the column's width, the API's check, the CLI's default cut
