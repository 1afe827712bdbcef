variable "host" {
  description = "What this host runs: one entry of the federation module's `hosts` output (files with their modes, systemd units in start order, data directories, the services' user and group)."
  type = object({
    files = map(object({
      content = string
      mode    = string
    }))
    units = list(string)
    dirs  = list(string)
    user  = string
    group = string
  })
  sensitive = true

  validation {
    condition     = alltrue([for path, f in var.host.files : startswith(path, "/") && !strcontains(path, "..") && can(regex("^0[0-7]{3}$", f.mode))])
    error_message = "host.files: absolute paths without '..', modes as four octal digits (\"0640\")."
  }
  validation {
    condition     = alltrue([for u in var.host.units : can(regex("^baton-[a-z0-9-]+\\.service$", u)) && length([for path in keys(var.host.files) : path if endswith(path, "/${u}")]) == 1])
    error_message = "host.units: baton-NAME.service units, each with its unit file among host.files."
  }
  validation {
    condition     = alltrue([for name in [var.host.user, var.host.group] : can(regex("^[a-z_][a-z0-9_-]{0,31}$", name))]) && alltrue([for d in var.host.dirs : startswith(d, "/") && !strcontains(d, "..")])
    error_message = "host.user and host.group: user and group names; host.dirs: absolute paths without '..'."
  }
}

variable "ssh" {
  description = <<-EOT
    Install over SSH (Terraform's file and remote-exec provisioners) on a machine that is
    already there, as root or a user with passwordless sudo. null: do not install over
    SSH; give the `cloud_init` output to the VM resource's user data instead.
  EOT
  type = object({
    host         = string
    user         = optional(string, "root")
    port         = optional(number, 22)
    private_key  = optional(string)
    agent        = optional(bool)
    host_key     = optional(string)
    bastion_host = optional(string)
    timeout      = optional(string, "5m")
  })
  default = null
}

variable "release_tarball" {
  description = "Path, on the machine running Terraform, of the release tarball (scripts/package.sh) whose binaries an SSH install copies to the host. null: the binaries are there already."
  type        = string
  default     = null
}

variable "release_url" {
  description = "URL the host downloads the release tarball from at first boot (cloud-init). null: the image has the binaries already."
  type        = string
  default     = null
}

variable "release_sha256" {
  description = "SHA-256 of the tarball at release_url, checked before it is unpacked (required with release_url)."
  type        = string
  default     = null

  validation {
    condition     = var.release_sha256 == null || can(regex("^[0-9a-f]{64}$", var.release_sha256))
    error_message = "release_sha256: 64 lowercase hex digits."
  }
  validation {
    condition     = var.release_url == null || var.release_sha256 != null
    error_message = "release_sha256: required with release_url, so a host never runs a tarball other than the one meant."
  }
}

variable "bin_dir" {
  description = "Where the binaries go (the federation module's paths.bin)."
  type        = string
  default     = "/usr/local/bin"
}

variable "purge_data_on_destroy" {
  description = "Whether destroying this resource also deletes the host's data directories (the shard manager's raft log, cells' stores). Default false: units and configs go, data stays."
  type        = bool
  default     = false
}

variable "state_dir" {
  description = "Where the host keeps what was installed (the install's ID, the units), so a later install removes units no longer wanted."
  type        = string
  default     = "/var/lib/baton-install"

  validation {
    condition     = startswith(var.state_dir, "/") && !strcontains(var.state_dir, "..")
    error_message = "state_dir: an absolute path without '..'."
  }
}
