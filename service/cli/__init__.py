"""``quantserve``, the command line: run the service, talk to a running one, or quantize and
unpack locally without a server."""
