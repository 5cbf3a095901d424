"""The generated operations files: Grafana provisioning (`grafana`) and the one-machine
Prometheus configuration (`prometheus`), written by `trackwatch ops` and checked against the
committed copies under deploy/."""
