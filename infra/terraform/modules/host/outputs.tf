output "install_script" {
  description = "The shell script that installs this host (what both ways run): for machines managed by other tools."
  value       = local.install
  sensitive   = true
}

output "uninstall_script" {
  description = "The shell script that removes this install (units, files; data too with purge_data_on_destroy), doing nothing once a newer install has replaced it."
  value       = local.uninstall
  sensitive   = true
}

output "cloud_init" {
  description = "cloud-config user data that installs this host at first boot (downloading release_url when given). Sensitive: it holds keys."
  sensitive   = true
  value = join("\n", [
    "#cloud-config",
    yamlencode({
      write_files = [{
        path        = "/var/lib/baton-install/install.sh"
        permissions = "0700"
        encoding    = "b64"
        content     = base64encode(local.install)
      }]
      runcmd = [
        var.release_url == null ? ["sh", "/var/lib/baton-install/install.sh"] : [
          "sh", "-c", join(" && ", [
            "curl -fsSL --retry 5 -o /var/lib/baton-install/release.tar.gz '${var.release_url}'",
            "echo '${coalesce(var.release_sha256, "-")}  /var/lib/baton-install/release.tar.gz' | sha256sum -c -",
            "sh /var/lib/baton-install/install.sh /var/lib/baton-install/release.tar.gz",
            "rm -f /var/lib/baton-install/release.tar.gz",
          ])
        ]
      ]
    }),
  ])
}

output "cloud_init_gzip_base64" {
  description = "cloud_init, gzipped and base64-encoded (for clouds whose user data is small, such as EC2's 16 KiB)."
  sensitive   = true
  value = base64gzip(join("\n", [
    "#cloud-config",
    yamlencode({
      write_files = [{ path = "/var/lib/baton-install/install.sh", permissions = "0700", encoding = "b64", content = base64encode(local.install) }]
      runcmd      = [["sh", "/var/lib/baton-install/install.sh"]]
    }),
  ]))
}
