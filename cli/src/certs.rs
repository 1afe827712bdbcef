//! `baton certs`: a federation's private certificate authority and its processes'
//! certificates, as files an operator hands to each host (`baton_service::tls`). Private
//! keys are written with mode 0600 and never printed.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use baton_service::tls::{Authority, Role};
use clap::Subcommand;

#[derive(Subcommand)]
pub enum CertsCommand {
    /// Make a new certificate authority: DIR/ca.pem (give it to every host) and DIR/ca.key
    /// (keep it where certificates are issued).
    Init {
        /// Folder for the files; created if missing.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// The authority's name.
        #[arg(long, default_value = "baton federation")]
        name: String,
    },
    /// Issue a certificate for a process: DIR/NAME.pem and DIR/NAME.key, signed by
    /// DIR/ca.pem and DIR/ca.key.
    Issue {
        /// Its role: operator, shard-manager, cell, worker or router.
        role: String,
        /// Host names and IP addresses its peers dial it at (repeatable).
        #[arg(long = "host")]
        hosts: Vec<String>,
        /// File name without extension. Default: the role.
        #[arg(long)]
        name: Option<String>,
        /// Folder of the authority and of the new files.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
}

/// Runs a `baton certs` command.
pub fn certs(command: CertsCommand) -> anyhow::Result<()> {
    match command {
        CertsCommand::Init { dir, name } => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let (cert, key) = (dir.join("ca.pem"), dir.join("ca.key"));
            if cert.exists() || key.exists() {
                bail!(
                    "{} already holds an authority (ca.pem or ca.key); remove it first or pick another --dir",
                    dir.display()
                );
            }
            let authority = Authority::generate(&name)?;
            write(&cert, authority.cert_pem(), 0o644)?;
            write(&key, authority.key_pem(), 0o600)?;
            println!("authority {name:?}: {} (public), {} (secret, 0600)", cert.display(), key.display());
        }
        CertsCommand::Issue { role, hosts, name, dir } => {
            let Some(parsed) = Role::parse(&role) else {
                let roles: Vec<&str> = Role::ALL.iter().map(|r| r.as_str()).collect();
                bail!("unknown role {role:?}: one of {}", roles.join(", "));
            };
            let read = |file: &str| {
                let path = dir.join(file);
                std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {} (run `baton certs init` first)", path.display()))
            };
            let authority = Authority::load(&read("ca.pem")?, &read("ca.key")?)?;
            let hosts: Vec<&str> = hosts.iter().map(String::as_str).collect();
            let issued = authority.issue(parsed, &hosts)?;
            let base = name.unwrap_or(role);
            let (cert, key) = (dir.join(format!("{base}.pem")), dir.join(format!("{base}.key")));
            write(&cert, &issued.cert_pem, 0o644)?;
            write(&key, &issued.key_pem, 0o600)?;
            println!("{} certificate: {} and {} (secret, 0600)", parsed.as_str(), cert.display(), key.display());
        }
    }
    Ok(())
}

/// Writes `text` to a new or replaced file created with `mode`.
fn write(path: &Path, text: &str, mode: u32) -> anyhow::Result<()> {
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(text.as_bytes()).with_context(|| format!("writing {}", path.display()))
}
