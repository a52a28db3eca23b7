"""Every exception zexus_bcache raises, in one place."""


class BcacheError(Exception):
    """Base class of all zexus_bcache errors."""


class CodecError(BcacheError):
    """Bytes cannot be encoded or decoded exactly (corrupt, foreign or unsupported)."""


class StoreError(BcacheError):
    """The persistent store cannot be opened or used."""


class SchemaTooNewError(StoreError):
    """The database was written by a newer zexus_bcache; refuse to touch it."""


class ConfigError(BcacheError):
    """A setting or argument has a value we cannot use."""


class KeyingError(BcacheError):
    """A tree holds a value that cannot be keyed exactly; compile it without the cache."""
