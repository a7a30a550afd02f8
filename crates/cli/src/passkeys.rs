//! `hybridge passkeys`: list, rename and delete the passkeys in a phone's store.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use hybridge_authenticator::store::{CredentialStore, StoredCredential};
use hybridge_client::webauthn::b64url;
use serde_json::{Value as Json, json};

use crate::common::{PinSource, open_store, store_path};
use crate::error::CliError;

/// `hybridge passkeys …`
#[derive(Debug, Args)]
pub struct PasskeysArgs {
    #[command(subcommand)]
    what: Passkeys,
}

/// The store and its PIN.
#[derive(Debug, Args)]
struct StoreArgs {
    /// The passkey store file (created by `hybridge phone`). Default:
    /// $XDG_DATA_HOME/hybridge/passkeys.hbk (~/.local/share/hybridge/passkeys.hbk).
    #[arg(long, env = "HYBRIDGE_STORE", value_name = "PATH")]
    store: Option<PathBuf>,
    /// Read the store PIN from this file instead of asking on the terminal.
    #[arg(long, env = "HYBRIDGE_PIN_FILE")]
    pin_file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Passkeys {
    /// List the passkeys as JSON: credential ID (base64url), RP ID, user, dates, discoverable.
    #[command(
        after_help = "Example:\n  hybridge passkeys list --store ~/.local/share/hybridge/passkeys.hbk"
    )]
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Change the display name of a passkey.
    #[command(
        after_help = "Example:\n  hybridge passkeys rename --store passkeys.hbk 3q2-7w 'Alice (work)'\n\nThe credential ID may be shortened to a unique prefix."
    )]
    Rename {
        #[command(flatten)]
        store: StoreArgs,
        /// The credential ID (base64url, as `list` shows it), or a unique prefix of it.
        /// (IDs are random base64url, so one in 64 starts with `-`: accepted as a value.)
        #[arg(allow_hyphen_values = true)]
        credential_id: String,
        /// The new display name.
        #[arg(allow_hyphen_values = true)]
        name: String,
    },
    /// Delete a passkey. The site still knows it; remove it there too.
    #[command(
        after_help = "Example:\n  hybridge passkeys delete --store passkeys.hbk 3q2-7w\n\nThe credential ID may be shortened to a unique prefix."
    )]
    Delete {
        #[command(flatten)]
        store: StoreArgs,
        /// The credential ID (base64url, as `list` shows it), or a unique prefix of it.
        #[arg(allow_hyphen_values = true)]
        credential_id: String,
    },
}

/// RFC 3339 UTC time of a Unix timestamp.
pub fn rfc3339(unix: u64) -> String {
    let date = crate::terminal::format_date(unix);
    let secs = unix % 86_400;
    format!(
        "{date}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

fn describe(c: &StoredCredential) -> Json {
    json!({
        "credential_id": b64url(&c.credential_id),
        "rp_id": c.rp_id,
        "rp_name": c.rp_name,
        "user_name": c.user_name,
        "display_name": c.user_display_name,
        "user_handle": b64url(&c.user_handle),
        "created": rfc3339(c.created),
        "last_used": c.last_used.map(rfc3339),
        "discoverable": c.discoverable,
        "sign_count": c.sign_count,
    })
}

/// The one credential whose base64url ID equals `wanted` or starts with it.
fn find(list: &[StoredCredential], wanted: &str) -> Result<Vec<u8>, CliError> {
    let wanted = wanted.trim();
    if wanted.is_empty() {
        return Err(CliError::Invalid("the credential ID is empty".into()));
    }
    let ids: Vec<(String, &StoredCredential)> =
        list.iter().map(|c| (b64url(&c.credential_id), c)).collect();
    if let Some((_, c)) = ids.iter().find(|(id, _)| id == wanted) {
        return Ok(c.credential_id.clone());
    }
    let matches: Vec<_> = ids
        .iter()
        .filter(|(id, _)| id.starts_with(wanted))
        .collect();
    match matches.as_slice() {
        [(_, c)] => Ok(c.credential_id.clone()),
        [] => Err(CliError::Invalid(format!(
            "no passkey with credential ID {wanted:?} (see `hybridge passkeys list`)"
        ))),
        _ => Err(CliError::Invalid(format!(
            "{} passkeys have IDs starting with {wanted:?}: give more of the ID",
            matches.len()
        ))),
    }
}

/// Runs `passkeys` and returns the JSON document to print.
pub fn run(args: &PasskeysArgs) -> Result<Json, CliError> {
    let open = |s: &StoreArgs| {
        let pin = PinSource {
            file: s.pin_file.clone(),
        };
        open_store(&store_path(s.store.as_deref())?, &pin, false).map(|(store, _, _)| store)
    };
    match &args.what {
        Passkeys::List { store } => {
            let store = open(store)?;
            let mut list = store.list()?;
            list.sort_by(|a, b| (&a.rp_id, a.created).cmp(&(&b.rp_id, b.created)));
            Ok(Json::Array(list.iter().map(describe).collect()))
        }
        Passkeys::Rename {
            store,
            credential_id,
            name,
        } => {
            if name.trim().is_empty() || name.len() > 256 || name.chars().any(char::is_control) {
                return Err(CliError::Invalid(
                    "the new name must be 1 to 256 bytes without control characters".into(),
                ));
            }
            let mut store = open(store)?;
            let id = find(&store.list()?, credential_id)?;
            store.rename(&id, name)?;
            let renamed = store.credential(&id)?.ok_or(CliError::Store(
                hybridge_authenticator::store::StoreError::NotFound,
            ))?;
            Ok(describe(&renamed))
        }
        Passkeys::Delete {
            store,
            credential_id,
        } => {
            let mut store = open(store)?;
            let id = find(&store.list()?, credential_id)?;
            store.delete(&id)?;
            Ok(json!({ "deleted": b64url(&id) }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(subcommand)]
        passkeys: Passkeys,
    }

    #[test]
    fn credential_ids_may_start_with_a_hyphen() {
        use clap::Parser as _;
        let rename =
            Cli::try_parse_from(["x", "rename", "--store", "s", "-2bPQElu", "-work"]).unwrap();
        assert!(
            matches!(rename.passkeys, Passkeys::Rename { ref credential_id, ref name, .. }
            if credential_id == "-2bPQElu" && name == "-work")
        );
        let delete = Cli::try_parse_from(["x", "delete", "-2bPQElu", "--store", "s"]).unwrap();
        assert!(
            matches!(delete.passkeys, Passkeys::Delete { ref credential_id, .. } if credential_id == "-2bPQElu")
        );
    }

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    }
}
