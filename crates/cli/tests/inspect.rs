//! Runs the real `hybridge` binary: JSON on stdout for good input; for bad input a non-zero
//! exit, exactly one line on stderr and nothing on stdout.

use std::process::{Command, Output};

use serde_json::Value;

const CHROME_LIKE_QR: &str = "FIDO:/527523780267869823807477988456094361690049144990957089661531273028156577806484634349100000001342264398000000000000000000056294995342131200265340480783106109321447142660";
const ZERO_SECRET: &str = "00000000000000000000000000000000";
// Plaintext 00 ‖ 01..0a ‖ 090a0b ‖ LE16(0), encrypted with the EID key of QR secret 00×16.
const ADVERT: &str = "0ddeabd38ee45c94ae57e5e5a796240e2fc6deac";

fn hybridge(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hybridge"))
        .args(args)
        .output()
        .expect("run hybridge")
}

fn ok_json(args: &[&str]) -> Value {
    let out = hybridge(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stderr.is_empty());
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

fn fails(args: &[&str]) -> String {
    let out = hybridge(args);
    assert!(!out.status.success(), "{args:?} succeeded");
    assert!(out.stdout.is_empty(), "{args:?} printed to stdout");
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err:?}");
    err
}

#[test]
fn inspect_qr() {
    let j = ok_json(&["inspect", "qr", CHROME_LIKE_QR]);
    assert_eq!(j["qr_secret"], ZERO_SECRET);
    assert_eq!(j["known_domains"], 2);
    assert_eq!(j["timestamp"], 1_700_000_000u64);
    assert_eq!(j["supports_linking"], true);
    assert_eq!(j["request_type"], "mc");
    assert_eq!(j["tunnel_id"], "3EEF97097986413B059EAA2A30D653D4");
    assert_eq!(j["unknown_keys"], serde_json::json!([]));
    assert_eq!(j["public_key"].as_str().unwrap().len(), 66);
    // Prefix is case-insensitive.
    let lower = CHROME_LIKE_QR.replacen("FIDO", "fido", 1);
    assert_eq!(ok_json(&["inspect", "qr", &lower]), j);
}

#[test]
fn inspect_qr_rejects_bad_urls() {
    for bad in [
        "FIDO:/",
        "FIDO://",
        "FIDO:/0",
        "FIDO:/999",
        "FIDO:/000",
        "https://example.com",
    ] {
        fails(&["inspect", "qr", bad]);
    }
}

#[test]
fn inspect_advert() {
    let j = ok_json(&[
        "inspect",
        "advert",
        "--qr-secret",
        ZERO_SECRET,
        "--advert",
        ADVERT,
    ]);
    assert_eq!(j["routing_id"], "090A0B");
    assert_eq!(j["domain_id"], 0);
    assert_eq!(j["nonce"], "0102030405060708090a");
    assert_eq!(j["hostname"], "cable.ua5v.com");
    assert_eq!(
        j["connect_url"],
        "wss://cable.ua5v.com/cable/connect/090A0B/3EEF97097986413B059EAA2A30D653D4"
    );
    // With a CTAP 2.3 suffix, and with the secret taken from the QR URL.
    let long = format!("{ADVERT}a1011881");
    let j = ok_json(&[
        "inspect",
        "advert",
        "--qr",
        CHROME_LIKE_QR,
        "--advert",
        &long,
    ]);
    assert_eq!(j["l2cap_psm"], 0x81);
}

#[test]
fn inspect_advert_errors() {
    let err = fails(&[
        "inspect",
        "advert",
        "--qr-secret",
        &"11".repeat(16),
        "--advert",
        ADVERT,
    ]);
    assert!(err.contains("does not belong"), "{err}");
    fails(&[
        "inspect",
        "advert",
        "--qr-secret",
        ZERO_SECRET,
        "--advert",
        &ADVERT[..38],
    ]);
    fails(&["inspect", "advert", "--qr-secret", "zz", "--advert", ADVERT]);
    fails(&["inspect", "advert", "--qr-secret", "00", "--advert", ADVERT]);
    fails(&["inspect", "advert", "--advert", ADVERT]);
    fails(&[
        "inspect",
        "advert",
        "--qr-secret",
        ZERO_SECRET,
        "--advert",
        ADVERT,
        "--known-domains",
        "0",
    ]);
}

#[test]
fn inspect_domain() {
    let j = ok_json(&["inspect", "domain", "266"]);
    assert_eq!(j["hostname"], "cable.wufkweyy3uaxb.com");
    assert_eq!(
        ok_json(&["inspect", "domain", "1"])["hostname"],
        "cable.auth.com"
    );
    let list = ok_json(&["inspect", "domain", "--find-tld", "org", "--count", "5"]);
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 5);
    for e in list {
        assert!(e["hostname"].as_str().unwrap().ends_with(".org"));
        assert!(e["id"].as_u64().unwrap() >= 256);
    }
    fails(&["inspect", "domain", "2"]);
    fails(&["inspect", "domain", "70000"]);
    fails(&["inspect", "domain", "--find-tld", "xyz"]);
    fails(&["inspect", "domain"]);
    fails(&["inspect", "nothing"]);
}

/// `--help` names the environment variables that can hold a QR code or its secret but never
/// shows their values.
#[test]
fn help_never_prints_qr_secrets_from_the_environment() {
    let secret = "00112233445566778899aabbccddeeff";
    for (cmd, var, value) in [
        (
            &["inspect", "advert", "--help"][..],
            "HYBRIDGE_QR_SECRET",
            secret,
        ),
        (
            &["phone", "--help"][..],
            "HYBRIDGE_QR",
            "FIDO:/1234567890123",
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_hybridge"))
            .args(cmd)
            .env(var, value)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{cmd:?}");
        assert!(text.contains(var), "{cmd:?}: {text}");
        assert!(!text.contains(value), "{cmd:?} printed {var}: {text}");
    }
}
