"""Pure domain logic: no grpc, no SQL, no HTTP."""
