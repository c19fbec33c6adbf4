"""Moving the media store to another with zero downtime (docs/media-migration.md)."""
