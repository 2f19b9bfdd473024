"""The node's read-only OCI registry over its content store, in three parts.

`api` decides: what the store holds and what each request is answered (a `Response` value, no sockets).
`connections` handles HTTP connections: parsing requests, caps and deadlines, writing responses (asyncio).
`serving` is the serving process: the listening socket, TLS, worker processes and stop signals.
`listeners` reads who listens on a port (/proc/net), for the images phase's checks before it starts the service.
"""
