//! `hybridge inspect`: decode hybrid protocol artefacts seen in real traffic.

use clap::{Args, Subcommand};
use hybridge_proto::advert::{self, DomainCheck};
use hybridge_proto::qr::{Key6, QrPayload};
use hybridge_proto::secret::QrSecret;
use hybridge_proto::session::Connect;
use hybridge_proto::tunnel::TunnelPath;
use hybridge_proto::{domain, kdf, keys};
use serde_json::{Value as Json, json};

use crate::error::{CliError, parse_hex};

/// `hybridge inspect …`
#[derive(Debug, Args)]
pub struct InspectArgs {
    #[command(subcommand)]
    what: Inspect,
}

#[derive(Debug, Subcommand)]
enum Inspect {
    /// Decode a FIDO:/ QR code URL: keys, flags, request type, derived tunnel ID.
    #[command(after_help = "Example:\n  hybridge inspect qr 'FIDO:/1234…'")]
    Qr {
        /// The URL encoded in the QR code (starts with FIDO:/, any case).
        url: String,
    },
    /// Decrypt a BLE advert (service data under 0xFFF9 or 0xFDE2) with a QR secret.
    #[command(
        after_help = "Example:\n  hybridge inspect advert --qr-secret 00000000000000000000000000000000 \\\n    --advert 0ddeabd38ee45c94ae57e5e5a796240e2fc6deac"
    )]
    Advert {
        /// The 16-byte QR secret as hex (see `hybridge inspect qr`).
        #[arg(
            long,
            env = "HYBRIDGE_QR_SECRET",
            hide_env_values = true,
            required_unless_present = "qr",
            conflicts_with = "qr"
        )]
        qr_secret: Option<String>,
        /// Alternatively, the whole FIDO:/ QR URL the secret comes from.
        #[arg(long)]
        qr: Option<String>,
        /// The service data as hex: 20 bytes, or more with a CTAP 2.3 suffix.
        #[arg(long)]
        advert: String,
        /// How many assigned tunnel domains the desktop knows (QR key 2).
        #[arg(long, default_value_t = domain::KNOWN_ASSIGNED_DOMAINS)]
        known_domains: u16,
    },
    /// Show the hostname of a tunnel-server domain ID, or search IDs by top-level domain.
    #[command(
        after_help = "Examples:\n  hybridge inspect domain 266\n  hybridge inspect domain --find-tld org --count 5"
    )]
    Domain {
        /// The domain ID (0, 1, or 256–65535).
        #[arg(required_unless_present = "find_tld", conflicts_with = "find_tld")]
        id: Option<u16>,
        /// List hashed IDs whose hostname ends in this TLD (com, org, net, info).
        #[arg(long)]
        find_tld: Option<String>,
        /// How many IDs --find-tld lists.
        #[arg(long, default_value_t = 10, requires = "find_tld")]
        count: usize,
    },
    /// Listen for hybrid adverts (service data under 0xFFF9 or 0xFDE2) and print each one
    /// heard as a line of JSON: a check that this computer hears a phone.
    #[command(
        after_help = "Examples:\n  hybridge inspect adverts --ble bluez:hci0 --for 30s\n  hybridge inspect adverts --qr 'FIDO:/…' --count 1   # until the phone that scanned it is heard\n\nOne JSON object per advert on stdout (repeats included, as the radio reports\nthem), a summary on stderr. Exit codes: 0 done, 3 --count not reached in time,\n8 the radio could not be used."
    )]
    Adverts {
        /// The radio to listen on: bluez[:hciN] or udp:ADDR:PORT.
        #[arg(
            long,
            env = "HYBRIDGE_BLE",
            default_value = "bluez",
            value_name = "SPEC"
        )]
        ble: hybridge_ble::RadioSpec,
        /// How long to listen.
        #[arg(long = "for", default_value = "10s", value_name = "DURATION", value_parser = crate::common::parse_duration)]
        duration: std::time::Duration,
        /// Stop after this many adverts (only those of --qr when it is given).
        #[arg(long)]
        count: Option<u64>,
        /// Decrypt adverts with this FIDO:/ QR code's secret and say which belong to it.
        #[arg(long)]
        qr: Option<String>,
        /// How many assigned tunnel domains the desktop knows (QR key 2).
        #[arg(long, default_value_t = domain::KNOWN_ASSIGNED_DOMAINS)]
        known_domains: u16,
    },
}

impl InspectArgs {
    /// Whether this is `inspect adverts`, which listens on a radio (async, streams its output).
    pub fn listens(&self) -> bool {
        matches!(self.what, Inspect::Adverts { .. })
    }
}

/// Runs `inspect adverts`: prints one line of JSON per advert heard; the summary goes to
/// stderr. Returns `Ok(None)` as everything has been printed already.
pub async fn adverts(args: &InspectArgs) -> Result<Option<Json>, CliError> {
    use std::io::Write as _;
    let Inspect::Adverts {
        ble,
        duration,
        count,
        qr,
        known_domains,
    } = &args.what
    else {
        return Err(CliError::Invalid("not an advert listen".into()));
    };
    let secret = qr
        .as_deref()
        .map(QrPayload::from_url)
        .transpose()?
        .map(|p| p.secret);
    let scanner = ble.scanner().await?;
    let mut scan = scanner.scan(&hybridge_ble::CABLE_UUIDS).await?;
    // Said once the radio listens, so that whoever starts an advert after it knows it counts.
    eprintln!("hybridge: listening on {} for {duration:?}", ble.kind());
    let start = tokio::time::Instant::now();
    let deadline = start + *duration;
    let (mut heard, mut matched) = (0u64, 0u64);
    // What --count counts: every advert, or with --qr only that QR code's.
    let counted = |heard: u64, matched: u64| if secret.is_some() { matched } else { heard };
    let outcome = loop {
        if count.is_some_and(|c| counted(heard, matched) >= c) {
            break Ok(());
        }
        let adv = match tokio::time::timeout_at(deadline, scan.next()).await {
            Err(_) => break Ok(()),
            Ok(None) => {
                break Err(CliError::Radio(hybridge_ble::Error::Bluetooth {
                    operation: "scan",
                    detail: scan
                        .failure()
                        .unwrap_or_else(|| "the radio stopped reporting adverts".into()),
                }));
            }
            Ok(Some(adv)) => adv,
        };
        heard += 1;
        let mut line = json!({
            "ms": start.elapsed().as_millis() as u64,
            "uuid": format!("{:04x}", adv.uuid16),
            "address": adv.address,
            "rssi": adv.rssi,
            "len": adv.service_data.len(),
            "service_data": hex::encode(&adv.service_data),
        });
        if let Some(secret) = &secret {
            let decoded = inspect_advert(secret, &adv.service_data, *known_domains).ok();
            line["for_this_qr"] = Json::Bool(decoded.is_some());
            if let Some(d) = decoded {
                matched += 1;
                for k in ["routing_id", "domain_id", "hostname", "l2cap_psm"] {
                    line[k] = d[k].clone();
                }
            }
        }
        let mut out = std::io::stdout().lock();
        if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
            break Ok(()); // stdout closed (e.g. `| head -1`): nothing more to say
        }
    };
    let _ = scan.stop().await;
    outcome?;
    let summary = match &secret {
        Some(_) => format!("heard {heard} adverts, {matched} from this QR code"),
        None => format!("heard {heard} adverts"),
    };
    eprintln!(
        "hybridge: {summary} in {:.1} s on {}",
        start.elapsed().as_secs_f64(),
        ble.kind()
    );
    match count {
        Some(c) if counted(heard, matched) < *c => Err(CliError::Timeout(format!(
            "{summary} within {duration:?}, fewer than --count {c}"
        ))),
        _ => Ok(None),
    }
}

/// Runs `inspect` and returns the JSON document to print.
pub fn run(args: &InspectArgs) -> Result<Json, CliError> {
    match &args.what {
        Inspect::Qr { url } => inspect_qr(url),
        Inspect::Advert {
            qr_secret,
            qr,
            advert,
            known_domains,
        } => {
            let secret = match (qr_secret, qr) {
                (Some(h), _) => {
                    QrSecret::from_slice(&parse_hex("--qr-secret", h)?).ok_or_else(|| {
                        CliError::Invalid("--qr-secret must be 16 bytes (32 hex characters)".into())
                    })?
                }
                (None, Some(url)) => QrPayload::from_url(url)?.secret,
                (None, None) => return Err(CliError::Invalid("give --qr-secret or --qr".into())),
            };
            inspect_advert(&secret, &parse_hex("--advert", advert)?, *known_domains)
        }
        Inspect::Domain { id: Some(id), .. } => inspect_domain(*id),
        Inspect::Domain {
            find_tld: Some(tld),
            count,
            ..
        } => find_tld(tld, *count),
        Inspect::Domain { .. } => Err(CliError::Invalid("give a domain ID or --find-tld".into())),
        Inspect::Adverts { .. } => Err(CliError::Invalid(
            "inspect adverts listens on a radio: run it through `adverts`".into(),
        )),
    }
}

fn key6_json(k: &Option<Key6>) -> Json {
    match k {
        None => Json::Null,
        Some(Key6::DataChannels(c)) => json!({ "data_channels": c }),
        Some(Key6::NonDiscoverableMc(b)) => json!({ "supports_non_discoverable_mc": b }),
    }
}

fn cbor_key_json(v: &hybridge_cbor::Value) -> Json {
    match v.as_int() {
        Some(i) => i64::try_from(i)
            .map(Json::from)
            .unwrap_or_else(|_| Json::String(i.to_string())),
        None => v
            .as_text()
            .map(Json::from)
            .unwrap_or_else(|| Json::String(format!("{v:?}"))),
    }
}

fn inspect_qr(url: &str) -> Result<Json, CliError> {
    let p = QrPayload::from_url(url)?;
    let tunnel_id = kdf::tunnel_id(&p.secret);
    Ok(json!({
        "public_key": hex::encode(keys::compressed(&p.identity_key)),
        "public_key_uncompressed": hex::encode(keys::uncompressed(&p.identity_key)),
        "qr_secret": hex::encode(p.secret.expose()),
        "known_domains": p.known_domains,
        "timestamp": p.timestamp,
        "supports_linking": p.supports_linking,
        "request_type": p.request_type.as_str(),
        "key6": key6_json(&p.key6),
        "unknown_keys": p.unknown_keys.iter().map(cbor_key_json).collect::<Vec<_>>(),
        "protocol_revision": hybridge_proto::frame::ProtocolRevision::of_qr(&p) as u8,
        "tunnel_id": tunnel_id.to_hex(),
        "new_tunnel_path": TunnelPath::New { tunnel_id }.to_path(),
    }))
}

fn inspect_advert(
    secret: &QrSecret,
    service_data: &[u8],
    known_domains: u16,
) -> Result<Json, CliError> {
    let key = kdf::eid_key(secret);
    let d = match advert::trial_decrypt(
        &key,
        service_data,
        DomainCheck::KnownAssigned(known_domains),
    ) {
        Err(hybridge_proto::Error::AdvertNotForUs) => {
            return Err(CliError::Invalid(
                "the advert does not belong to this QR secret (its tag does not match)".into(),
            ));
        }
        r => r?,
    };
    let connect = Connect {
        domain_id: d.fields.domain_id,
        hostname: domain::hostname(d.fields.domain_id),
        routing_id: d.fields.routing_id,
        tunnel_id: kdf::tunnel_id(secret),
    };
    Ok(json!({
        "plaintext": hex::encode(d.plaintext),
        "nonce": hex::encode(d.fields.nonce),
        "routing_id": d.fields.routing_id.to_hex(),
        "domain_id": d.fields.domain_id,
        "hostname": connect.hostname,
        "tunnel_id": connect.tunnel_id.to_hex(),
        "connect_path": connect.path().to_path(),
        "connect_url": connect.url(),
        "l2cap_psm": d.suffix.as_ref().and_then(|s| s.l2cap_psm),
        "suffix_len": service_data.len() - advert::ADVERT_LEN,
    }))
}

fn inspect_domain(id: u16) -> Result<Json, CliError> {
    let host = domain::hostname(id).ok_or_else(|| {
        CliError::Invalid(format!(
            "domain ID {id} is reserved (2-255 have no hostname); use 0, 1 or 256-65535"
        ))
    })?;
    Ok(json!({ "id": id, "hostname": host, "hashed": id >= domain::FIRST_HASHED_ID }))
}

fn find_tld(tld: &str, count: usize) -> Result<Json, CliError> {
    let t = tld.trim_start_matches('.').to_ascii_lowercase();
    if !domain::HASHED_TLDS.contains(&t.as_str()) {
        return Err(CliError::Invalid(format!(
            "hashed tunnel domains only end in {}; {tld:?} is not one of them",
            domain::HASHED_TLDS.join(", ")
        )));
    }
    let found = domain::find_ids_with_tld(&t, count);
    Ok(Json::Array(
        found
            .into_iter()
            .map(|(id, hostname)| json!({ "id": id, "hostname": hostname }))
            .collect(),
    ))
}
