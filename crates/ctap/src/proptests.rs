//! Property tests: every message round-trips through its byte form, and no decoder panics on
//! arbitrary bytes.

use hybridge_cbor::Value;
use proptest::prelude::*;

use crate::*;

fn text() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 .é-]{0,12}"
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..max)
}

/// Canonical order of short text / byte keys: shorter first, then bytewise.
fn canonical<T>(mut v: Vec<(Vec<u8>, T)>) -> Vec<(Vec<u8>, T)> {
    v.sort_by(|a, b| a.0.len().cmp(&b.0.len()).then_with(|| a.0.cmp(&b.0)));
    v.dedup_by(|a, b| a.0 == b.0);
    v
}

fn prf_values() -> impl Strategy<Value = PrfValues> {
    (any::<[u8; 32]>(), prop::option::of(any::<[u8; 32]>()))
        .prop_map(|(first, second)| PrfValues { first, second })
}

fn prf_inputs() -> impl Strategy<Value = PrfInputs> {
    (
        prop::option::of(prf_values()),
        prop::collection::vec(
            (prop::collection::vec(any::<u8>(), 1..8), prf_values()),
            0..3,
        ),
    )
        .prop_map(|(eval, by)| PrfInputs {
            eval,
            eval_by_credential: canonical(by),
        })
}

fn descriptor() -> impl Strategy<Value = CredentialDescriptor> {
    (
        prop_oneof![Just("public-key".to_owned()), text()],
        bytes(40),
        prop::option::of(prop::collection::vec(text(), 0..3)),
    )
        .prop_map(|(type_, id, transports)| CredentialDescriptor {
            type_,
            id,
            transports,
        })
}

fn options() -> impl Strategy<Value = Options> {
    (
        prop::option::of(any::<bool>()),
        prop::option::of(any::<bool>()),
        prop::option::of(any::<bool>()),
    )
        .prop_map(|(rk, up, uv)| Options { rk, up, uv })
}

fn user() -> impl Strategy<Value = UserEntity> {
    (
        bytes(70),
        prop::option::of(text()),
        prop::option::of(text()),
    )
        .prop_map(|(id, name, display_name)| UserEntity {
            id,
            name,
            display_name,
        })
}

fn param() -> impl Strategy<Value = PubKeyCredParam> {
    (
        text(),
        any::<i64>().prop_filter("MIN is the out-of-range marker", |a| *a != i64::MIN),
    )
        .prop_map(|(type_, alg)| PubKeyCredParam { type_, alg })
}

prop_compose! {
    fn make_credential()(
        client_data_hash in any::<[u8; 32]>(),
        rp in (text(), prop::option::of(text())).prop_map(|(id, name)| RpEntity { id, name }),
        user in user(),
        pub_key_cred_params in prop::collection::vec(param(), 0..4),
        exclude_list in prop::collection::vec(descriptor(), 0..4),
        hmac_secret in prop::option::of(any::<bool>()),
        prf in prop::option::of(prf_inputs()),
        options in options(),
        pin_uv_auth_param in prop::option::of(bytes(32)),
        pin_uv_auth_protocol in prop::option::of(any::<u64>()),
        enterprise_attestation in prop::option::of(any::<u64>()),
        attestation_formats_preference in prop::option::of(prop::collection::vec(text(), 0..3)),
    ) -> MakeCredentialRequest {
        MakeCredentialRequest {
            client_data_hash, rp, user, pub_key_cred_params, exclude_list,
            extensions: MakeCredentialExtensions { hmac_secret, prf },
            options, pin_uv_auth_param, pin_uv_auth_protocol, enterprise_attestation,
            attestation_formats_preference,
        }
    }
}

prop_compose! {
    fn get_assertion()(
        rp_id in text(),
        client_data_hash in any::<[u8; 32]>(),
        allow_list in prop::collection::vec(descriptor(), 0..4),
        prf in prop::option::of(prf_inputs()),
        options in options(),
        pin_uv_auth_param in prop::option::of(bytes(32)),
        pin_uv_auth_protocol in prop::option::of(any::<u64>()),
    ) -> GetAssertionRequest {
        GetAssertionRequest {
            rp_id, client_data_hash, allow_list,
            extensions: GetAssertionExtensions { prf }, options,
            pin_uv_auth_param, pin_uv_auth_protocol,
        }
    }
}

fn unsigned() -> impl Strategy<Value = UnsignedExtensionOutputs> {
    prop::option::of((
        prop::option::of(any::<bool>()),
        prop::option::of(prf_values()),
    ))
    .prop_map(|p| UnsignedExtensionOutputs {
        prf: p.map(|(enabled, results)| PrfOutputs { enabled, results }),
    })
}

fn attestation() -> impl Strategy<Value = AttestationStatement> {
    prop_oneof![
        Just(AttestationStatement::None),
        (
            any::<i64>(),
            bytes(80),
            prop::collection::vec(bytes(20), 0..3)
        )
            .prop_map(|(alg, sig, x5c)| AttestationStatement::Packed { alg, sig, x5c }),
        bytes(10).prop_map(|b| AttestationStatement::Other {
            fmt: "tpm".into(),
            stmt: Value::map([(Value::from("ver"), Value::from(b))]),
        }),
    ]
}

fn responses() -> impl Strategy<Value = (Command, Response)> {
    prop_oneof![
        (
            attestation(),
            bytes(200),
            prop::option::of(any::<bool>()),
            prop::option::of(bytes(32)),
            unsigned()
        )
            .prop_map(|(attestation, auth_data, ep_att, large_blob_key, u)| {
                (
                    Command::MakeCredential,
                    Response::MakeCredential(Box::new(MakeCredentialResponse {
                        attestation,
                        auth_data,
                        ep_att,
                        large_blob_key,
                        unsigned_extension_outputs: u,
                    })),
                )
            }),
        (
            prop::option::of(descriptor()),
            bytes(100),
            bytes(72),
            prop::option::of(user()),
            prop::option::of(any::<u64>()),
            prop::option::of(any::<bool>()),
            prop::option::of(bytes(32)),
            unsigned()
        )
            .prop_map(|(credential, auth_data, signature, user, n, sel, lbk, u)| {
                (
                    Command::GetAssertion,
                    Response::GetAssertion(Box::new(GetAssertionResponse {
                        credential,
                        auth_data,
                        signature,
                        user,
                        number_of_credentials: n,
                        user_selected: sel,
                        large_blob_key: lbk,
                        unsigned_extension_outputs: u,
                    })),
                )
            }),
        (
            prop::collection::vec(text(), 0..3),
            prop::collection::vec(text(), 0..3),
            any::<[u8; 16]>(),
            prop::collection::vec(
                (prop::collection::vec(b'a'..=b'z', 1..6), any::<bool>()),
                0..4
            ),
            prop::option::of(any::<u64>()),
            prop::collection::vec(any::<u64>(), 0..3),
            prop::collection::vec(text(), 0..3),
            prop::collection::vec(param(), 0..3)
        )
            .prop_map(
                |(
                    versions,
                    extensions,
                    aaguid,
                    opts,
                    max_msg_size,
                    pins,
                    transports,
                    algorithms,
                )| {
                    let options = canonical(opts)
                        .into_iter()
                        .map(|(k, v)| (String::from_utf8(k).unwrap_or_default(), v))
                        .collect();
                    (
                        Command::GetInfo,
                        Response::GetInfo(Box::new(GetInfoResponse {
                            versions,
                            extensions,
                            aaguid,
                            options,
                            max_msg_size,
                            pin_uv_auth_protocols: pins,
                            max_credential_count_in_list: Some(3),
                            max_credential_id_length: None,
                            transports,
                            algorithms,
                        })),
                    )
                }
            ),
        Just((Command::Selection, Response::Selection)),
        (1u8..=255).prop_map(|s| (Command::GetAssertion, Response::Error(StatusCode(s)))),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn make_credential_round_trip(r in make_credential()) {
        let req = Request::from(r);
        let bytes = req.encode();
        prop_assert_eq!(Request::decode(&bytes).unwrap(), req.clone());
        // Canonical: encoding is a fixed point.
        prop_assert_eq!(Request::decode(&bytes).unwrap().encode(), bytes);
    }

    #[test]
    fn get_assertion_round_trip(r in get_assertion()) {
        let req = Request::from(r);
        let bytes = req.encode();
        prop_assert_eq!(Request::decode(&bytes).unwrap(), req);
    }

    #[test]
    fn response_round_trip((cmd, resp) in responses()) {
        let bytes = resp.encode();
        prop_assert_eq!(Response::decode(cmd, &bytes).unwrap(), resp);
    }

    #[test]
    fn decoders_never_panic(b in bytes(400)) {
        let _ = Request::decode(&b);
        for cmd in [Command::MakeCredential, Command::GetAssertion, Command::GetInfo, Command::Selection] {
            let _ = Response::decode(cmd, &b);
        }
        let _ = AuthenticatorData::parse(&b);
        let _ = parse_attestation_object(&b);
        let _ = GetInfoResponse::from_cbor(&b);
    }

    #[test]
    fn request_decoder_never_panics_on_cbor(cmd in prop::sample::select(vec![1u8, 2]), b in bytes(300)) {
        // Valid-looking CBOR maps reach the typed layer.
        let mut m = vec![cmd, 0xa4];
        m.extend(b);
        let _ = Request::decode(&m);
    }

    #[test]
    fn auth_data_round_trip(
        rp in text(), flags in any::<u8>(), count in any::<u32>(),
        acd in prop::option::of((any::<[u8; 16]>(), bytes(64), any::<[u8; 32]>(), any::<[u8; 32]>())),
        ext in any::<bool>(),
    ) {
        let ad = AuthenticatorData {
            rp_id_hash: rp_id_hash(&rp),
            flags: Flags(flags),
            sign_count: count,
            attested_credential_data: acd.map(|(aaguid, credential_id, x, y)| AttestedCredentialData {
                aaguid, credential_id, public_key: CoseKey::Es256 { x, y },
            }),
            extensions: ext.then(|| Value::map([(Value::from("hmac-secret"), Value::from(true))])),
        };
        let bytes = ad.to_bytes();
        let back = AuthenticatorData::parse(&bytes).unwrap();
        prop_assert_eq!(back.to_bytes(), bytes);
        prop_assert_eq!(back.attested_credential_data, ad.attested_credential_data);
        prop_assert_eq!(back.sign_count, count);
    }
}
