"""Live dashboards: overview, sticky sessions, server drain and health, over Channels.

Pages render their current state from Redis and the database first (they work
without JavaScript), then a WebSocket consumer pushes batched deltas.
"""
