variable "shard_managers" {
  description = <<-EOT
    The shard-manager replicas: 1 (no fault tolerance, for trials), 3 or 5, spread over
    regions so that no region holds a majority of them when there are several regions.
    `host` is the name or address the other processes reach the host at (and the key of
    the `hosts` output); `region` is where it runs.
  EOT
  type = list(object({
    host       = string
    region     = string
    port       = optional(number, 7500)
    admin_port = optional(number, 7501)
  }))

  validation {
    condition     = contains([1, 3, 5], length(var.shard_managers))
    error_message = "shard_managers: give 1, 3 or 5 replicas (an odd number: raft needs a majority, and an even count tolerates no more failures than one fewer)."
  }
  validation {
    condition = length(var.shard_managers) < 3 || length(distinct(var.shard_managers[*].region)) < 2 || alltrue([
      for region in distinct(var.shard_managers[*].region) :
      length([for sm in var.shard_managers : sm if sm.region == region]) * 2 < length(var.shard_managers)
    ])
    error_message = "shard_managers: no region may hold a majority of the replicas, or losing that region stops the federation's control plane; spread them (for 3 replicas: 3 regions)."
  }
  validation {
    condition     = length(distinct(var.shard_managers[*].host)) == length(var.shard_managers)
    error_message = "shard_managers: each replica needs a host of its own."
  }
}

variable "regions" {
  description = <<-EOT
    The regions, each with its cells. A cell has one control-plane host, one or more
    data-plane hosts (which routers call) and one or more worker hosts (which run the
    sandboxes). `redis_url` keeps the control plane's state in Redis instead of its
    embedded store; `weight` is its relative capacity on the ring.
  EOT
  type = map(object({
    cells = map(object({
      control = object({
        host       = string
        port       = optional(number, 7100)
        admin_port = optional(number, 7102)
      })
      data_planes = list(object({
        host       = string
        port       = optional(number, 8080)
        admin_port = optional(number, 7103)
      }))
      workers = list(object({
        host             = string
        port             = optional(number, 7300)
        admin_port       = optional(number, 7301)
        sandbox_port_min = optional(number, 20000)
        sandbox_port_max = optional(number, 29999)
      }))
      weight    = optional(number, 1)
      redis_url = optional(string)
    }))
  }))

  validation {
    condition     = length(var.regions) > 0
    error_message = "regions: give at least one region."
  }
  validation {
    condition     = alltrue([for name, region in var.regions : length(region.cells) > 0])
    error_message = "regions: every region needs at least one cell (${join(", ", [for name, region in var.regions : name if length(region.cells) == 0])} has none)."
  }
  validation {
    condition     = alltrue(flatten([for region in var.regions : [for cell in region.cells : length(cell.workers) > 0]]))
    error_message = "regions: every cell needs at least one worker, or it can start no sandbox."
  }
  validation {
    condition     = alltrue(flatten([for region in var.regions : [for cell in region.cells : length(cell.data_planes) > 0]]))
    error_message = "regions: every cell needs at least one data plane, or no call reaches it."
  }
  validation {
    condition     = length(flatten([for region in var.regions : keys(region.cells)])) == length(distinct(flatten([for region in var.regions : keys(region.cells)])))
    error_message = "regions: cell IDs are the federation's: the same one in two regions would be one cell."
  }
  validation {
    condition     = alltrue(flatten([for region in var.regions : [for id, cell in region.cells : can(regex("^[a-z][a-z0-9-]{0,62}$", id)) && cell.weight >= 1]]))
    error_message = "regions: a cell ID is 1-63 lowercase letters, digits and '-', starting with a letter; a weight is at least 1."
  }
  validation {
    condition = alltrue(flatten([for region in var.regions : [for cell in region.cells : [
      for w in cell.workers : w.sandbox_port_min >= 1024 && w.sandbox_port_min <= w.sandbox_port_max && w.sandbox_port_max <= 65535
    ]]]))
    error_message = "regions: a worker's sandbox ports are a range within 1024-65535, min before max."
  }
}

variable "routers" {
  description = "The routers: the tenants' endpoints (put a load balancer in front of several)."
  type = list(object({
    host       = string
    region     = string
    port       = optional(number, 8000)
    admin_port = optional(number, 8001)
  }))

  validation {
    condition     = length(var.routers) > 0
    error_message = "routers: give at least one router, or tenants cannot reach the federation."
  }
  validation {
    condition     = length(distinct(var.routers[*].host)) == length(var.routers)
    error_message = "routers: each router needs a host of its own."
  }
}

variable "async_redis_url" {
  description = <<-EOT
    Redis URL (redis://host:port/db) of the queue of asynchronous calls every router
    shares, so any router delivers any call and a router's death loses none (docs/async.md).
    Run it with appendonly yes. Null: each router keeps its own queue in a file under its
    data folder, delivered by it alone.
  EOT
  type        = string
  default     = null

  validation {
    condition     = var.async_redis_url == null || can(regex("^rediss?://", var.async_redis_url))
    error_message = "async_redis_url: must be a redis:// or rediss:// URL."
  }
}

variable "tls" {
  description = <<-EOT
    Mutual TLS between the processes (docs/tls.md): the authority's certificate and, for
    each host and role it runs ("HOST/shard-manager", "HOST/cell", "HOST/worker",
    "HOST/router"), a certificate and key issued with `baton certs issue ROLE --host HOST`.
    null runs every process plaintext: for trials on one machine or a private network only.
  EOT
  type = object({
    ca_cert = string
    certs = map(object({
      cert = string
      key  = string
    }))
  })
  default = null
}

variable "secrets_key" {
  description = "The shard managers' key for sealing tenants' registry credentials (32 random bytes, hex; `openssl rand -hex 32`). null: the federation refuses registry credentials."
  type        = string
  default     = null
  sensitive   = true

  validation {
    condition     = var.secrets_key == null || can(regex("^[0-9a-f]{64}$", var.secrets_key))
    error_message = "secrets_key: 64 lowercase hex digits (openssl rand -hex 32)."
  }
}

variable "paths" {
  description = "Where hosts keep baton: binaries, configuration (with TLS material under tls/), data, and systemd units."
  type = object({
    bin    = optional(string, "/usr/local/bin")
    config = optional(string, "/etc/baton")
    data   = optional(string, "/var/lib/baton")
    units  = optional(string, "/etc/systemd/system")
  })
  default = {}

  validation {
    condition     = alltrue([for p in [var.paths.bin, var.paths.config, var.paths.data, var.paths.units] : startswith(p, "/") && !strcontains(p, "..")])
    error_message = "paths: absolute paths without '..'."
  }
}

variable "log_format" {
  description = "Log lines: \"json\" (for a log pipeline) or \"human\"."
  type        = string
  default     = "json"

  validation {
    condition     = contains(["json", "human"], var.log_format)
    error_message = "log_format: \"json\" or \"human\"."
  }
}

variable "service_user" {
  description = "The system user and group every process but the workers runs as (workers run as root: sandboxes need namespaces and cgroups). The host module creates them where missing."
  type = object({
    user  = optional(string, "baton")
    group = optional(string, "baton")
  })
  default = {}

  validation {
    condition     = can(regex("^[a-z_][a-z0-9_-]{0,31}$", var.service_user.user)) && can(regex("^[a-z_][a-z0-9_-]{0,31}$", var.service_user.group))
    error_message = "service_user: user and group names of lowercase letters, digits, '_' and '-'."
  }
}
