"""HTTP: the server's own asyncio HTTP/1.1 server and the Request/Response types every front-end shares."""
