"""The names of the routes from a file to the model (shared.imaging), where the command line needs them
without loading the decoders."""

RESIZE_MODES = ("squash", "center_crop")  # the whole-image routes; native_crops is the other kind
ROUTES = RESIZE_MODES + ("native_crops",)
