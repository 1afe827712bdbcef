output "hosts" {
  description = <<-EOT
    Per host: `files` (absolute path => content and mode: configs, systemd units, TLS
    material, the secrets key), `units` (the systemd units to run, in start order:
    shard managers, control planes, data planes, workers, routers), `dirs` (their data
    directories) and the service `user` and `group`. Sensitive: it holds keys. Give each
    host's entry to the host module.
  EOT
  sensitive   = true
  value = {
    for host in local.hosts : host => {
      files = local.host_files[host]
      units = [for p in local.processes : "baton-${p.name}.service" if p.host == host]
      dirs  = [for p in local.processes : "${var.paths.data}/${p.name}" if p.host == host]
      user  = var.service_user.user
      group = var.service_user.group
    }
  }

  precondition {
    condition     = length(local.duplicate_ports) == 0
    error_message = "Two processes would bind the same port on one host: ${join(", ", local.duplicate_ports)}. Give them other ports."
  }
  precondition {
    condition     = length(local.overlapping_ranges) == 0
    error_message = "Workers on one host need sandbox port ranges of their own (sandbox_port_min and _max): ${join(", ", local.overlapping_ranges)} overlap."
  }
  precondition {
    condition     = length(local.ports_in_ranges) == 0
    error_message = "A process port inside a worker's sandbox ports: ${join(", ", local.ports_in_ranges)}."
  }
  precondition {
    condition     = length(local.tls_missing) == 0
    error_message = "tls.certs has no certificate for ${join(", ", local.tls_missing)} (keys are \"HOST/ROLE\"; issue each with baton certs issue ROLE --host HOST)."
  }
}

output "router_endpoints" {
  description = "The routers' tenant API URLs."
  value       = [for r in var.routers : "http://${r.host}:${r.port}"]
}

output "shard_manager_addresses" {
  description = "The shard-manager replicas' gRPC URLs, comma-separated as BATON_SHARD_MANAGER and the provider's shard_manager take them."
  value       = join(",", local.sm_urls)
}

output "prometheus_targets" {
  description = "File-based service discovery for infra/prometheus/prometheus.yml: file name under its targets/ => JSON, every process's /metrics endpoint labelled with its region (and cell)."
  value = {
    "shard-managers.json" = jsonencode([for sm in var.shard_managers : { targets = ["${sm.host}:${sm.admin_port}"], labels = { region = sm.region } }])
    "cells.json" = jsonencode(flatten([
      for id, cell in local.cells : concat(
        [{ targets = ["${cell.control.host}:${cell.control.admin_port}"], labels = { region = cell.region, cell = id } }],
        [for dp in cell.data_planes : { targets = ["${dp.host}:${dp.admin_port}"], labels = { region = cell.region, cell = id } }],
      )
    ]))
    "workers.json" = jsonencode(flatten([
      for id, cell in local.cells : [for w in cell.workers : { targets = ["${w.host}:${w.admin_port}"], labels = { region = cell.region, cell = id } }]
    ]))
    "routers.json" = jsonencode([for r in var.routers : { targets = ["${r.host}:${r.admin_port}"], labels = { region = r.region } }])
  }
}
