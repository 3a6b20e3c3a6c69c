"""hcloud-flow's worker side: the API client, one Celery task per server action, the action monitor."""

__version__ = "0.1.0"
