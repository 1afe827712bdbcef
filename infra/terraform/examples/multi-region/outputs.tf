output "router_endpoints" {
  description = "The routers' tenant API URLs (put a load balancer in front of them)."
  value       = module.federation.router_endpoints
}

output "shard_manager" {
  description = "BATON_SHARD_MANAGER for the CLI and the provider's shard_manager."
  value       = module.federation.shard_manager_addresses
}

output "prometheus_targets" {
  description = "Files for infra/prometheus/targets/ (file-based discovery of every process)."
  value       = module.federation.prometheus_targets
}
