"""The origin design's API (async managers, todo tracking) as thin layers over the Engine."""
