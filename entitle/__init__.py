"""The `entitle` command line, settings and the pieces that glue parts together.

Lives in its own package so that the agent (on a device) never imports the
cloud, and the cloud never imports the agent: only this package sees both.
"""

__all__: list[str] = []
