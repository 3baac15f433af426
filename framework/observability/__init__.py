"""What a run tells the outside: OpenTelemetry traces and metrics, and readable logs."""
