variable "bin_dir" {
  description = "Absolute path of the folder holding baton's binaries (cargo build --release --workspace: the repository's target/release)."
  type        = string

  validation {
    condition     = startswith(var.bin_dir, "/")
    error_message = "bin_dir: an absolute path."
  }
}

variable "state_dir" {
  description = "Absolute path of the folder the federation keeps its configs, data, logs and process IDs in; terraform destroy removes it."
  type        = string

  validation {
    condition     = startswith(var.state_dir, "/") && length(trimsuffix(var.state_dir, "/")) > 1
    error_message = "state_dir: an absolute path other than /."
  }
}

variable "port_base" {
  description = "The processes listen on 16 ports from this one up (shard manager, two cells' control and data planes, their workers, the router; each with its admin port)."
  type        = number
  default     = 17500
}

variable "ports" {
  description = "The 16 ports themselves, in place of port_base (tests pass ports known to be free)."
  type        = list(number)
  default     = null

  validation {
    condition     = var.ports == null || length(coalesce(var.ports, [])) == 16
    error_message = "ports: exactly 16."
  }
}

variable "sandbox_port_base" {
  description = "The two workers' sandboxes take 500 ports each from this one up."
  type        = number
  default     = 18000
}

variable "function_memory" {
  description = "Memory of the sample function's sandboxes, MiB."
  type        = number
  default     = 64
}
