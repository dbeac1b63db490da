"""In-repo emulators of the upstream provider APIs, for tests and for trying routing
by hand (``smsgw emulate KIND --port N``). Each implements its documented API
strictly and can be told to fail, slow down or answer partially."""
