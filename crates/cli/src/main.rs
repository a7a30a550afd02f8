//! `hybridge`: FIDO hybrid (caBLE v2) from the command line.
//!
//! Data goes to stdout (JSON where a program will read it); errors go to stderr as one line.
//! Exit codes: 0 success, 1 invalid input, 2 usage error.
//!
//! Each subcommand lives in its own module with an `Args` struct and a `run` function, so new
//! ones (register, sign-in, phone, passkeys, demo) slot in as one enum variant and one module.
#![forbid(unsafe_code)]

mod error;
mod inspect;

use std::io::Write;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::error::{EXIT_OK, EXIT_USAGE};

/// FIDO hybrid transport ("use a phone to sign in") tools.
#[derive(Debug, Parser)]
#[command(name = "hybridge", version, about, propagate_version = true)]
#[command(
    after_help = "Examples:\n  hybridge inspect qr 'FIDO:/…'\n  hybridge inspect domain 266\n\nExit codes: 0 success, 1 invalid input, 2 usage error."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Decode QR codes, adverts and tunnel domains (JSON on stdout).
    Inspect(inspect::InspectArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                return ExitCode::from(EXIT_OK as u8);
            }
            // One line: clap's first line, without the usage block.
            let rendered = e.render().to_string();
            let first = rendered
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("invalid arguments");
            let first = first.trim_start_matches("error: ");
            eprintln!("hybridge: {first} (see --help)");
            return ExitCode::from(EXIT_USAGE as u8);
        }
    };
    let result = match &cli.command {
        Command::Inspect(args) => inspect::run(args),
    };
    match result {
        Ok(json) => {
            let mut out = std::io::stdout().lock();
            let text = serde_json::to_string_pretty(&json).unwrap_or_else(|_| "null".into());
            if writeln!(out, "{text}").is_err() {
                return ExitCode::from(error::EXIT_INVALID_INPUT as u8);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            let msg = e.to_string().replace('\n', " ");
            eprintln!("hybridge: {msg}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}
