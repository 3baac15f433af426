"""The built-in adapters: the stores, queues and renderers statesaga ships, registered under its
entry-point groups exactly as a third-party plugin would be."""
