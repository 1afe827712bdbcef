output "router_url" {
  description = "The router: call the function at $router_url/function/echo with the API key."
  value       = module.federation.router_endpoints[0]
}

output "shard_manager" {
  description = "The shard manager's gRPC URL (BATON_SHARD_MANAGER)."
  value       = module.federation.shard_manager_addresses
}

output "api_key" {
  description = "The demo tenant's API key (terraform output -raw api_key)."
  value       = baton_api_key.demo.secret
  sensitive   = true
}
