"""Streamlit-side helpers of the app: sidebar, per-session state and query parameters,
caches, the sample gallery and downloads. The library (resattn/) never imports this."""
