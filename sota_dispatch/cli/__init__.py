"""The command line of ``python -m sota_dispatch.serve``: arguments, what they build, how it runs."""

__all__: list[str] = []
