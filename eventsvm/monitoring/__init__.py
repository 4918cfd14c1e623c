"""Monitoring: Prometheus metrics fed by the read model, consumer lag, and the live dashboard."""
