//! NATS URLs: the credentials they may carry, read for logging in and kept out of logs.
#![cfg_attr(not(feature = "cluster"), allow(dead_code))]

/// Login details found in NATS URLs (async-nats itself ignores them in the URL).
#[derive(PartialEq, Eq)]
pub(super) enum UrlAuth {
    None,
    UserPassword(String, String),
    Token(String),
}

/// The credentials in the first URL that has any, for [`async_nats::ConnectOptions`].
pub(super) fn url_auth(urls: &str) -> UrlAuth {
    match urls.split(',').find_map(|url| split_userinfo(url.trim()).1) {
        None => UrlAuth::None,
        Some(info) => match info.split_once(':') {
            Some((user, password)) => UrlAuth::UserPassword(user.to_owned(), password.to_owned()),
            None => UrlAuth::Token(info.to_owned()),
        },
    }
}

/// The URLs with any credentials replaced by `***`, for logs and errors.
pub(crate) fn redact_url(urls: &str) -> String {
    rewrite_userinfo(urls, "***@")
}

/// The URLs without credentials: what async-nats gets (and may log).
pub(super) fn strip_credentials(urls: &str) -> String {
    rewrite_userinfo(urls, "")
}

fn rewrite_userinfo(urls: &str, replacement: &str) -> String {
    urls.split(',')
        .map(|url| match split_userinfo(url) {
            (scheme, Some(_), rest) => format!("{scheme}{replacement}{rest}"),
            (_, None, _) => url.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// One URL around its credentials: what comes before them (`scheme://`, or nothing), the
/// `user[:password]` or token before the host's `@` if any, and the host onward.
fn split_userinfo(url: &str) -> (&str, Option<&str>, &str) {
    let start = url.find("://").map_or(0, |i| i + 3);
    let (scheme, rest) = url.split_at(start);
    let authority = rest.split('/').next().unwrap_or(rest);
    match authority.rfind('@') {
        Some(at) => (scheme, Some(&rest[..at]), &rest[at + 1..]),
        None => (scheme, None, rest),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::ClusterConfig;
    use std::time::Duration;

    #[test]
    fn credentials_are_taken_from_urls_and_kept_out_of_logs() {
        let urls = "tls://relay:s3cret@nats-a:4222/x, nats://nats-b:4222";
        assert!(
            url_auth(urls) == UrlAuth::UserPassword("relay".into(), "s3cret".into()),
            "user and password"
        );
        assert!(url_auth("nats://t0ken@h:1") == UrlAuth::Token("t0ken".into()));
        assert!(url_auth("nats://h:1,nats://h2:2") == UrlAuth::None);
        assert!(url_auth("h:4222") == UrlAuth::None);
        assert_eq!(
            redact_url(urls),
            "tls://***@nats-a:4222/x, nats://nats-b:4222"
        );
        assert_eq!(
            strip_credentials(urls),
            "tls://nats-a:4222/x, nats://nats-b:4222"
        );
        let cfg = ClusterConfig::new(urls, Duration::from_secs(1));
        assert!(!format!("{cfg:?}").contains("s3cret"));
    }
}
