"""Set-up of the Prefect objects the deployments need."""
