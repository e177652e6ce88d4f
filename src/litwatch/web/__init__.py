"""The web view, /healthz and /metrics on one real server (uvicorn + Starlette), and
the one-click unsubscribe links (issue 26)."""
