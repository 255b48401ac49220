//! dib-helper: the small privileged helper for loop devices, partitions, mkfs
//! and mounts. The server lands with issue #6; until then every command says
//! so and exits non-zero, so nothing mistakes this skeleton for a helper.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// dib-helper: privileged block-device helper for dib (loop, partitions, mkfs, mounts).
#[derive(Debug, Parser)]
#[command(name = "dib-helper", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve dib clients on a Unix socket.
    Serve {
        /// Socket path to listen on.
        #[arg(long, value_name = "PATH")]
        socket: PathBuf,
        /// Allow this user to connect (repeatable).
        #[arg(long, value_name = "NAME")]
        allow_user: Vec<String>,
        /// Allow members of this group to connect (repeatable).
        #[arg(long, value_name = "NAME")]
        allow_group: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { .. } => {
            eprintln!(
                "dib-helper: error: not yet supported in this version of dib: serving clients \
                 (protocol version {}) lands with issue #6",
                dib_sandbox::PROTOCOL_VERSION
            );
            ExitCode::FAILURE
        }
    }
}
