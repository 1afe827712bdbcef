variable "regions" {
  description = <<-EOT
    The regions and their hosts, by address (names or IPs the other hosts reach them at):
    the region's shard-manager replica (give three regions for three replicas), its
    routers, and its cells with their control-plane, data-plane and worker hosts.
  EOT
  type = map(object({
    shard_manager = string
    routers       = list(string)
    cells = map(object({
      control     = string
      data_planes = list(string)
      workers     = list(string)
    }))
  }))
}

variable "tls_dir" {
  description = "Folder with the federation's ca.pem and, per host and role, HOST-ROLE.pem and HOST-ROLE.key (README.md shows how `baton certs` makes them)."
  type        = string
}

variable "secrets_key_file" {
  description = "File holding the shard managers' sealing key (openssl rand -hex 32 > FILE); null refuses tenants' registry credentials."
  type        = string
  default     = null
}

variable "release_tarball" {
  description = "The release tarball (scripts/package.sh) whose static binaries go to every host."
  type        = string
}

variable "ssh_user" {
  description = "The SSH user on every host: root, or one with passwordless sudo."
  type        = string
  default     = "root"
}

variable "ssh_private_key_file" {
  description = "Private key for SSH; null uses the SSH agent."
  type        = string
  default     = null
}

variable "bastion_host" {
  description = "A jump host for SSH, when the hosts are not reachable directly."
  type        = string
  default     = null
}
