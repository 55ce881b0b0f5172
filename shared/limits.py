"""Defaults of the limits that more than one module needs: settings declare them, the decoding and the
classifier default to them, so a change is made here once. No heavy imports: the web reads it too."""

MAX_PIXELS = 40_000_000  # per image, checked from the header before decoding
MAX_JPEG_SCANS = 100  # passes of a progressive JPEG: encoders write about 10; thousands are a decoding trap
BATCH_SIZE = 128  # images per task, about this many crops per forward pass
