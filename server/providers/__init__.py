"""Provider transports, one per upstream API, behind domain.ports.Transport."""
