"""grpc.aio servicers, proto<->domain conversion, error mapping, interceptors."""
