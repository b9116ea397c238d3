"""Data: the shard writer (``writer``), named sources of shards (``sources``) and the streaming
loader that feeds training and exact evaluation (``loader``)."""


from spnkit.core.errors import SpnkitError


class DataError(SpnkitError):
    """Data that is missing, damaged or does not match the recipe; the message names what and where."""
