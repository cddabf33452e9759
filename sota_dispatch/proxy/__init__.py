"""The request path: listeners and their client connections, each request's
exchange with its tries, routes, and the timer that ends what runs late.
"""

__all__: list[str] = []
